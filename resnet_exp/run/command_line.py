"""Check every job of a command line before anything runs.

Hydra reports a bad override with a multi-line message, and a bad value that
only a sweep produces surfaces when that job starts, after others have run.
Here every combination a command line (or a preset's sweep) would launch is
composed and checked up front, in a fraction of a second and without
TensorFlow, and the first problem is printed as one line naming the key.
The search path is the one `@hydra.main` builds from the same command line
(--config-path, --config-name, --config-dir, `hydra.searchpath`), so a user's own
configs are checked as Hydra will compose them; a config file PyYAML cannot read is
one line naming its file, line and column.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, version
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import (
    HydraException,
    MissingConfigException,
    OverrideParseException,
    SearchPathException,
)
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from resnet_exp import compat
from resnet_exp.config.schema import ConfigError, check_config, register_configs, unknown_key

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# The entry point and its `@hydra.main(config_path=..., config_name=...)`: a command line's
# --config-path is relative to the entry point's folder, as Hydra reads it.
ENTRY = CONF_DIR.parent / "experiments" / "train.py"
ENTRY_CONFIG_PATH = "../conf"
ENTRY_CONFIG_NAME = "config"
VERSION_BASE = "1.3"


@dataclass
class HydraArgs:
    """What `@hydra.main` reads from a command line that runs jobs."""

    overrides: list[str]
    config_name: str
    config_path: str  # the primary config folder: --config-path, relative to ENTRY's folder
    config_dir: str | None  # --config-dir: a folder added to the search path
    multirun: bool


def _misplaced_flag(argv: list[str]) -> None:
    """Hydra's parser takes its flags only before the overrides; after one, it prints its
    usage and `unrecognized arguments`. Say what to move instead."""
    first = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    late = [arg for arg in argv[first:] if arg in ("-m", "--multirun")]
    if late:
        raise CommandLineError(
            f"{late[0]} comes after an override; Hydra reads its flags only before them: "
            f"python experiments/train.py {late[0]} {' '.join(a for a in argv if a != late[0])}"
        )


def hydra_args(argv: list[str]) -> HydraArgs | None:
    """A command line as Hydra's own parser reads it; None for one that runs nothing
    (--help, --cfg, --info, ...) or that the parser refuses (Hydra then says why)."""
    args = compat.hydra_arguments(argv)
    if args is None:
        _misplaced_flag(argv)
    if args is None or args.help or args.hydra_help or args.cfg or args.shell_completion:
        return None
    if args.info is not None or args.experimental_rerun is not None:
        return None
    return HydraArgs(
        overrides=list(args.overrides),
        config_name=args.config_name or ENTRY_CONFIG_NAME,
        config_path=args.config_path or ENTRY_CONFIG_PATH,
        config_dir=args.config_dir,
        multirun=bool(args.multirun),
    )


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


def _shown(name: Any) -> str:
    """A file's name as a message shows it: relative to the working folder when inside it."""
    name = str(name)
    if os.path.isabs(name) and not os.path.relpath(name).startswith(".."):
        return os.path.relpath(name)  # conf/data/digits.yaml, not the whole path
    return name


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a config file PyYAML cannot read: `file:line:column: problem`, at the
    place PyYAML stopped (its `problem_mark`), with what it was reading there."""
    if isinstance(err, yaml.reader.ReaderError):  # a control character: file and position
        try:
            before = Path(str(err.name)).read_text(encoding="utf-8")[: err.position]
        except (OSError, UnicodeError):
            return " ".join(str(err).split())
        line, column = before.count("\n") + 1, err.position - before.rfind("\n")
        return f"{_shown(err.name)}:{line}:{column}: {err.reason} (#x{err.character:04x})"
    if not isinstance(err, yaml.MarkedYAMLError):
        return " ".join(str(err).split())
    mark = err.problem_mark or err.context_mark
    where = "a config file"
    if mark is not None:
        where = f"{_shown(mark.name)}:{mark.line + 1}:{mark.column + 1}"
    problem = err.problem or err.context or "not valid YAML"
    if err.problem and err.context:  # e.g. "while parsing a flow sequence" and where it began
        began = f" from line {err.context_mark.line + 1}" if err.context_mark else ""
        problem += f" ({err.context}{began})"
    return " ".join(f"{where}: {problem}".split())


_MULTIPLE = re.compile(r"Multiple values for (?P<group>[\w/.-]+)\. To override a value use")
_NO_MATCH = re.compile(r"Could not override '(?P<group>[\w/.-]+)'\. No match in the defaults list")


def defaults_list_hint(message: str, overrides: list[str]) -> str | None:
    """Hydra 1.3's defaults-list grammar: `group=option` changes a group the defaults list
    has (conf/config.yaml lists `experiment: null`, so `experiment=NAME`), `+group=option`
    adds one it lacks (a primary config of one's own without `experiment`). Hydra refuses
    the other spelling in its defaults list's own syntax; say which one works instead."""
    for pattern, prefix, instead, why in (
        (_MULTIPLE, "+", "", "the defaults list already has {}; a + adds only a group it lacks"),
        (_NO_MATCH, "", "+", "the defaults list has no {} to override"),
    ):
        found = pattern.search(message)
        given = found and next(
            (o for o in overrides if o.split("=")[0] == prefix + found["group"]), None
        )
        if given:
            group, value = found["group"], given.split("=", 1)[1]
            return f"{given}: {why.format(group)}; write {instead}{group}={value}"
    return None


_IN_FILE = re.compile(r"^In '(?P<path>[^']+)':")


def no_package(message: str, key: str) -> str | None:
    """A group's file whose keys land under the group's own name, which the schema lacks:
    an experiment preset without `# @package _global_` (Hydra: "In 'experiment/mine':
    ... Key 'experiment' not in 'Config'")."""
    found = _IN_FILE.search(message)
    if not found or found["path"].split("/")[0] != key.split(".")[0]:
        return None
    return (
        f"{found['path']}.yaml: its keys land under `{key.split('.')[0]}.`, which no config "
        "has; begin the file with `# @package _global_`, as conf/experiment/*.yaml do"
    )


_PRIMARY = re.compile(r"Cannot find primary config '(?P<name>[^']*)'")
_PRIMARY_DIR = re.compile(r"Check that the config directory '(?P<folder>[^']*)' exists")


def primary_problem(message: str) -> str | None:
    """One line for a primary config (--config-name) or its folder (--config-path) that
    Hydra cannot find, naming the folders it looked in."""
    found = _PRIMARY.search(message)
    if found:
        folders = re.findall(r"path=file://(\S+)", message)
        where = ", ".join(folders) or "the config search path"
        return f"--config-name {found['name']}: no {found['name']}.yaml in {where}"
    found = _PRIMARY_DIR.search(message)
    if found:
        return f"--config-path: no folder {found['folder']}"
    return None


def explain(err: Exception, overrides: list[str]) -> str:
    """One line for a composition error: the key, and what is allowed."""
    cause = err.__cause__ or err.__context__
    if isinstance(cause, yaml.YAMLError):
        return yaml_problem(cause)
    hint = defaults_list_hint(str(err), overrides)
    if hint:
        return hint
    if isinstance(err, MissingConfigException):
        primary = primary_problem(str(err))
        if primary:
            return primary
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
            return no_package(str(err), key) or unknown_key(key)
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
    except yaml.YAMLError as err:
        raise CommandLineError(yaml_problem(err)) from None
    except (HydraException, OmegaConfBaseException) as err:
        raise CommandLineError(explain(err, overrides)) from None


@dataclass
class Launch:
    """What a valid command line will run: every job's composed config, and whether as a sweep."""

    jobs: list[DictConfig]
    multirun: bool


def compose_jobs(argv: list[str], every_job: bool = True) -> Launch | None:
    """Compose and check every job; None for flags that run nothing (--help, --cfg).

    The search path is the one `@hydra.main` builds from the same command line
    (--config-path, --config-name, --config-dir; `hydra.searchpath` is read by the
    composition itself), so a user's own configs compose here as they will there.
    `every_job=False` composes a sweep's first job only: the entry point's check before
    Hydra starts, since the sweeper composes and checks every job of a sweep itself.
    """
    command = hydra_args(argv)
    if command is None:
        return None
    overrides, name = command.overrides, command.config_name
    register_configs()
    version.setbase(VERSION_BASE)
    GlobalHydra.instance().clear()
    try:
        with one_line_errors(overrides):
            try:
                primary_dir = compat.hydra_primary_dir(str(ENTRY), command.config_path)
                search_path = compat.hydra_search_path(primary_dir, command.config_dir)
            except ValueError:  # Hydra refuses a file (*.yaml) as --config-path
                path = command.config_path
                message = f"--config-path {path}: a folder; name its file with --config-name"
                raise CommandLineError(message) from None
            except SearchPathException:
                folder = os.path.abspath(str(command.config_dir))
                message = f"--config-dir {command.config_dir}: no folder {folder}"
                raise CommandLineError(message) from None
            compat.initialize_hydra(search_path, ENTRY.stem)
            jobs = expand_sweeps(overrides)
            first = compose(name, overrides=jobs[0], return_hydra_config=True)
            multirun = command.multirun or str(OmegaConf.select(first, "hydra.mode")).endswith(
                "MULTIRUN"
            )
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
