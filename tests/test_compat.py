"""Each private Keras item in `resnet_exp.compat` still does, in the installed Keras, what
the project relies on. These fail loudly when a release moves or changes one of them."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resnet_exp import compat


def _compiled() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def test_keras_keeps_its_name_counters_where_keras_untouched_reads_them():
    from keras.src.backend.common import global_state  # moved: compat.keras_untouched is stale

    keras.backend.clear_session()
    assert global_state.get_global_attribute("object_name_uids") is None
    assert compat.keras_untouched()
    keras.layers.Dense(2)
    assert global_state.get_global_attribute("object_name_uids") is not None
    assert not compat.keras_untouched()


def test_symbolic_build_creates_the_optimizer_slots_and_metric_state_before_fit():
    model = _compiled()
    assert not model.optimizer.built
    spec = (keras.KerasTensor((None, 4), "float32"), keras.KerasTensor((None,), "int32"))
    assert compat.symbolic_build(model, spec), "Keras has no Model._symbolic_build any more"
    assert model.optimizer.built
    assert model.optimizer.variables  # momentum slots and the iteration counter
    assert all(m.variables for m in model.metrics)  # loss and accuracy state


def test_the_train_step_hands_its_gradients_to_the_hooked_apply_and_unhooking_restores_it():
    model = _compiled()
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.arange(8) % 3
    seen: list[int] = []

    def wrap(apply):
        def hooked(grads, trainable_variables=None):
            seen.append(len(list(grads)))  # runs while the train step traces
            return apply(grads, trainable_variables)

        return hooked

    optimizer = compat.hook_optimizer_apply(model, wrap)
    assert optimizer is model.optimizer and "apply" in vars(optimizer)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    traced = len(seen)  # once per trace (twice while the optimiser's slots are created)
    assert traced >= 1 and set(seen) == {2}  # the kernel's and the bias's gradients
    assert int(model.optimizer.iterations) == 2  # the wrapped apply still updates

    compat.unhook_optimizer_apply(model, optimizer)
    assert "apply" not in vars(optimizer)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert len(seen) == traced  # the re-made train function no longer calls the hook
    assert int(model.optimizer.iterations) == 4


# ---------------------------------------------------------------- Hydra (the command-line check)


def test_hydra_reads_a_command_line_with_the_parser_compat_uses(capsys):
    args = compat.hydra_arguments(["-cd=extra", "--config-name", "mine", "-m", "seed=1,2"])
    assert (args.config_dir, args.config_name, args.config_path) == ("extra", "mine", None)
    assert args.multirun and args.overrides == ["seed=1,2"]
    assert compat.hydra_arguments(["--no-such-flag"]) is None  # left to Hydra to refuse
    assert compat.hydra_arguments(["--version"]) is None
    assert capsys.readouterr() == ("", "")  # said by Hydra's own parse, not twice


@pytest.mark.slow  # Hydra's entry point in a subprocess
def test_hydra_main_builds_the_search_path_compat_builds(tmp_path):
    """The entry point's own search path and job name (`--cfg hydra`) for --config-path,
    relative to the entry point, and --config-dir, against compat's for the same flags."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml
    from hydra import compose, version
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from resnet_exp.config.schema import register_configs
    from resnet_exp.run.command_line import CONF_DIR, ENTRY

    conf, extra = tmp_path / "conf", tmp_path / "extra"
    shutil.copytree(CONF_DIR, conf)
    extra.mkdir()
    argv = ["--config-path", os.path.relpath(conf, ENTRY.parent), "--config-dir", str(extra)]
    shown = subprocess.run(
        [sys.executable, str(ENTRY), *argv, "--cfg", "hydra"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    theirs = yaml.safe_load(shown.stdout)["hydra"]

    args = compat.hydra_arguments(argv)
    primary = compat.hydra_primary_dir(str(ENTRY), args.config_path)
    assert primary == str(conf)
    register_configs()
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    try:
        compat.initialize_hydra(compat.hydra_search_path(primary, args.config_dir), ENTRY.stem)
        ours = compose("config", return_hydra_config=True).hydra
    finally:
        GlobalHydra.instance().clear()
    sources = OmegaConf.to_container(ours.runtime.config_sources)
    assert sources == theirs["runtime"]["config_sources"]
    assert [s["provider"] for s in sources] == ["hydra", "main", "command-line", "schema"]
    assert ours.job.name == theirs["job"]["name"] == "train"
