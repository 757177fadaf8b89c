"""Check every job of a command line before anything runs.

Hydra reports a bad override with a multi-line message, and a bad value that
only a sweep produces surfaces when that job starts, after others have run.
Here every combination a command line (or a preset's sweep) would launch is
composed and checked up front, in a fraction of a second and without
TensorFlow, and the first problem is printed as one line naming the key.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from resnet_exp.config.schema import ConfigError, check_config, register_configs, unknown_key

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
_VALUE_FLAGS = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"}
_SKIP_FLAGS = {"-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--shell-completion"}


def split_argv(argv: list[str]) -> tuple[list[str], str | None]:
    """The overrides in a Hydra command line, and the config name if one is given."""
    overrides: list[str] = []
    config_name = None
    args = iter(argv)
    for arg in args:
        if arg in _VALUE_FLAGS:
            value = next(args, None)
            if arg in ("-cn", "--config-name"):
                config_name = value
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, config_name


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Every job's override list, as Hydra's basic sweeper would form them."""
    parser = OverridesParser.create()
    choices = []
    for override in parser.parse_overrides(overrides):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={v}" for v in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(combo) for combo in itertools.product(*choices)]


def job_overrides(
    overrides: list[str], sweep_params: dict | None, exclude: Sequence[dict] = ()
) -> list[list[str]]:
    """Every job's overrides: the command line's, then a preset's `hydra.sweeper.params`
    less the keys the command line already sets, expanded as Hydra's basic sweeper does,
    less the combinations `hydra.sweeper.exclude` lists. The command-line check and the
    sweeper (`run.sweep.StudySweeper`) both use this."""
    given_keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    preset = [f"{k}={v}" for k, v in (sweep_params or {}).items() if k not in given_keys]
    extras = expand_sweeps(preset)  # [[]] when there is no preset
    jobs = [job + extra for job in expand_sweeps(overrides) for extra in extras]
    kept = [job for job in jobs if not any(_matches(job, rule) for rule in exclude)]
    if jobs and not kept:
        raise CommandLineError("hydra.sweeper.exclude leaves no job of the sweep to run")
    return kept


def _matches(job: list[str], rule: dict) -> bool:
    """True when the job sets every key of `rule` to its value (`true` and `True` alike):
    Hydra's sweeps are products, and `exclude` drops the combinations that cannot run
    (e.g. Fixup with batch norm) instead of refusing the whole sweep."""
    values = {}
    for override in job:
        key, _, value = override.partition("=")
        values[key.lstrip("+~")] = value.strip().lower()
    return all(values.get(str(k)) == _text(v) for k, v in rule.items())


def _text(value: Any) -> str:
    """A YAML value as its command-line spelling, lower case: True -> true, [-1] -> [-1]."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return "null" if value is None else str(value).lower()


def sweeper_settings(config: DictConfig) -> tuple[dict, list[dict]]:
    """A composed config's `hydra.sweeper.params` and `hydra.sweeper.exclude`, as plain values."""
    params = OmegaConf.select(config, "hydra.sweeper.params")
    exclude = OmegaConf.select(config, "hydra.sweeper.exclude")
    return (
        {str(k): str(v) for k, v in OmegaConf.to_container(params).items()} if params else {},
        OmegaConf.to_container(exclude) if exclude else [],
    )


def explain(err: Exception, overrides: list[str]) -> str:
    """One line for a composition error: the key, and what is allowed."""
    if isinstance(err, MissingConfigException):
        group = (err.missing_cfg_file or "").split("/")[0]
        given = next((o for o in overrides if o.split("=")[0] == group), group)
        options = ", ".join(err.options or [])
        return f"{given}: no such option" + (f"; choose from {options}" if options else "")
    if isinstance(err, OverrideParseException):
        return unparsable(overrides) or " ".join(str(err).split())
    cause = err.__cause__ or err.__context__ or err
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        msg = str(getattr(cause, "msg", cause)).splitlines()[0]
        if "not in" in msg and key:
            return unknown_key(key)
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=")[0] == key), None)
        return f"{key}={value}: {msg}" if value is not None else f"{key}: {msg}"
    return " ".join(str(err).split())


def unparsable(overrides: list[str]) -> str | None:
    """Which override Hydra's grammar refuses, and why, in words: the shell splits
    `model.depth= 8` into `model.depth=` and `8`, and Hydra then reports only a lexer error."""
    parser = OverridesParser.create()
    for i, override in enumerate(overrides):
        try:
            parser.parse_overrides([override])
        except OverrideParseException:
            before = overrides[i - 1] if i else ""
            if before.endswith("=") and "=" not in override:
                return (
                    f"{before} {override}: a space after `=` splits one override in two; "
                    f"write {before}{override}"
                )
            return f"{override}: not an override (key=value, +key=value or ~key)"
    return None


def without_hydra(cfg: DictConfig) -> DictConfig:
    """What `compose(..., return_hydra_config=False)` returns: the same config less `hydra`."""
    job = copy.deepcopy(cfg)
    with open_dict(job):
        del job["hydra"]
    return job


class CommandLineError(ValueError):
    """A command line that cannot run; the message is one line."""


@contextlib.contextmanager
def one_line_errors(overrides: list[str]) -> Iterator[None]:
    """Turn a composition or check error inside into a `CommandLineError` naming the key."""
    try:
        yield
    except ConfigError as err:
        raise CommandLineError(str(err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise CommandLineError(explain(err, overrides)) from None


@dataclass
class Launch:
    """What a valid command line will run: every job's composed config, and whether as a sweep."""

    jobs: list[DictConfig]
    multirun: bool


def compose_jobs(argv: list[str], every_job: bool = True) -> Launch | None:
    """Compose and check every job; None for flags that run nothing (--help, --cfg).

    `every_job=False` composes a sweep's first job only: the entry point's check before
    Hydra starts, since the sweeper composes and checks every job of a sweep itself.
    """
    if any(a in _SKIP_FLAGS or a.startswith("--cfg") for a in argv):
        return None
    overrides, config_name = split_argv(argv)
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with one_line_errors(overrides), initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            name = config_name or "config"
            jobs = expand_sweeps(overrides)
            first = compose(name, overrides=jobs[0], return_hydra_config=True)
            multirun = any(a in ("-m", "--multirun") for a in argv) or str(
                OmegaConf.select(first, "hydra.mode")
            ).endswith("MULTIRUN")
            if not multirun and len(jobs) > 1:
                sweep = next(o for o in overrides if len(expand_sweeps([o])) > 1)
                raise CommandLineError(f"{sweep} is a sweep: add -m (--multirun) to run each value")
            reusable = jobs[0]  # `first` is this job's config, plus Hydra's own node
            if multirun and every_job:
                params, exclude = sweeper_settings(first)
                jobs = job_overrides(overrides, params, exclude)
            composed = []
            for job in jobs[: None if every_job else 1]:
                with one_line_errors(job):
                    # one composition fewer (~0.1 s) where the first job is the one composed
                    cfg = without_hydra(first) if job == reusable else compose(name, job)
                    check_config(cfg)
                composed.append(cfg)
    finally:
        GlobalHydra.instance().clear()
    return Launch(composed, multirun)


def validate(argv: list[str]) -> str | None:
    """None if every job the command line would launch is valid, else a one-line reason."""
    try:
        compose_jobs(argv)
    except CommandLineError as err:
        return str(err)
    return None


def validate_or_exit(every_job: bool = True) -> Launch | None:
    """Print `config error: ...` on one line and exit 2 if `sys.argv` cannot run."""
    try:
        return compose_jobs(sys.argv[1:], every_job)
    except CommandLineError as err:
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(2)
