"""How a run is named and tagged, so MLflow's runs table and Group-by read at a glance.

A name leads with what tells twins apart: depth, then the net's kind (`d56-plain`,
`d56-residual`; skips on some blocks only: `d13-skip@stage5_block1`; a residual
init other than the standard: `d56-residual-fixup`), then one short token for each
other key the sweep varies (`d56-plain-nobn-s1` in a sweep over batch norm and seeds). The
sweep passes the keys it varies to every job (`tracking.varying`); a single run
has none, so its name is just depth and kind. Everything else is a tag or a
param, where MLflow can filter and group by it.

No TensorFlow or MLflow here: the sweeper, jobs and summaries share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from resnet_exp import contract
from resnet_exp.config.depths import blocks_with_skips

# Always in the name, first (the kind says where the skips are): never repeated as a token.
NAMED_FIRST = ("model.depth", "model.residual", "model.skip_at", "model.residual_init")
# Config groups chosen by name on the command line (`model=mlp`): the token is the choice.
_GROUPS = {"model": "model.name", "data": "data.name", "optim": "optim.name"}
# Keys whose token reads better than `<leaf><value>`.
_SHORT = {"model.batch_norm": ("bn", "nobn"), "seed": "s", "optim.lr": "lr"}


def arch(model: Any) -> str:
    """The net's kind, the one label the whole study compares (the `arch` tag).

    `plain` (no skips), `residual` (a skip on every block) or `skip@<blocks>` (skips on
    the blocks joined by `+`, in forward order, as `lesion.csv` names them); then
    `-skipinit` or `-fixup` when the residual branches are initialised that way.
    """
    names, skips = blocks_with_skips(model)
    if not skips:
        kind = "plain"
    elif len(skips) == len(names):
        kind = "residual"
    else:
        kind = "skip@" + "+".join(n for n in names if n in skips)
    init = str(getattr(model, "residual_init", None) or "standard")
    return kind if init == "standard" else f"{kind}-{init}"


def skip_placement(model: Any) -> str:
    """The `skip_at` tag: `all`, `none`, or the blocks with a skip, comma-separated."""
    names, skips = blocks_with_skips(model)
    if not skips or len(skips) == len(names):
        return "all" if skips else "none"
    return ",".join(n for n in names if n in skips)


def varying_keys(overrides: Iterable[str]) -> list[str]:
    """The keys a sweep varies (`model.depth=8,20` varies model.depth), in the given order.

    Depth and plain/residual are left out: every name has them anyway.
    """
    keys: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override() and key not in NAMED_FIRST and key not in keys:
            keys.append(key)
    return keys


def _token(cfg: DictConfig, key: str) -> str | None:
    value = OmegaConf.select(cfg, _GROUPS.get(key, key))
    if value is None:
        return None
    short = _SHORT.get(key)
    if isinstance(short, tuple):
        return short[0] if value else short[1]
    if short:
        return f"{short}{value}"
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, bool):
        return leaf if value else f"no{leaf}"
    if key in _GROUPS or isinstance(value, str):
        return str(value)
    if OmegaConf.is_list(value) or isinstance(value, list | tuple):
        return leaf + "x".join(str(v) for v in value)
    return f"{leaf}{value}"


def run_name(cfg: DictConfig, varying: Sequence[str] | None = None) -> str:
    """`d{depth}-{arch}` plus a token per varying key (default: `tracking.varying`)."""
    if varying is None:
        varying = OmegaConf.select(cfg, "tracking.varying") or []
    parts = [f"d{cfg.model.depth}", arch(cfg.model)]
    parts += [t for key in varying if key not in NAMED_FIRST and (t := _token(cfg, key))]
    return "-".join(parts)


def comparison_tags(cfg: DictConfig) -> dict[str, str]:
    """Tags for the UI's filters and Group-by: `tags.arch = 'plain'`, depth, model family,
    where the skips are."""
    return {
        contract.ARCH: arch(cfg.model),
        contract.DEPTH: str(cfg.model.depth),
        contract.MODEL: str(cfg.model.name),
        contract.SKIP_AT: skip_placement(cfg.model),
    }


def sweep_name(experiment: str, jobs: Sequence[DictConfig]) -> str:
    """A sweep parent's run name: the study and what it sweeps, as the runs table shows it
    (`depth_sweep: d8-56 x plain|residual`), rather than a hash."""
    depths = sorted({int(job.model.depth) for job in jobs})
    kinds = list(dict.fromkeys(arch(job.model) for job in jobs))
    span = f"d{depths[0]}" + (f"-{depths[-1]}" if len(depths) > 1 else "")
    nets = "|".join(kinds) if len(kinds) <= 3 else f"{len(kinds)} kinds of net"
    return f"{experiment}: {span} x {nets}"
