"""The panoptic model under the shared Trainer, on a tiny synthetic split, and back from its checkpoint."""
import torch

from groundkit.config import config_from_dict, config_to_dict
from groundkit.data.panoptic_dataset import PanopticSegDataset, collate_panoptic
from groundkit.data.synthetic.writer import write_split
from groundkit.data.transforms import ResizeConfig
from groundkit.engine.checkpoint import load_checkpoint
from groundkit.engine.logging import read_metrics
from groundkit.engine.trainer import Trainer, TrainerConfig
from groundkit.models.panoptic import PanopticConfig, build_panoptic


def test_two_steps_with_the_trainer_and_rebuild(tmp_path, make_config):
    write_split(tmp_path / "data", "train", 2, seed=0, image_size=64, progress=False)
    cfg = make_config(thing_ids=tuple(range(1, 10)), stuff_ids=tuple(range(101, 108)))
    dataset = PanopticSegDataset(tmp_path / "data", "train", ResizeConfig(64, 64), flip=True,
                                 thing_ids=cfg.thing_ids, stuff_ids=cfg.stuff_ids)
    model = build_panoptic(cfg)
    trainer_cfg = TrainerConfig(epochs=1, batch_size=2, max_steps=2, log_every=1, quiet=True,
                                out_dir=str(tmp_path / "run"), tensorboard=False, device="cpu")
    Trainer(model, dataset, collate_panoptic, trainer_cfg, model_type="panoptic",
            experiment_config={"model": config_to_dict(cfg)}).fit()
    logged = [r for r in read_metrics(tmp_path / "run") if "loss_panoptic" in r]
    assert logged and all(r["loss"] > 0 for r in logged)
    state, meta = load_checkpoint(tmp_path / "run", expected_model_type="panoptic")
    rebuilt = build_panoptic(config_from_dict(PanopticConfig, meta["config"]["model"]))
    rebuilt.load_state_dict(state)
    batch = collate_panoptic([dataset[0]])
    model.eval(), rebuilt.eval()
    assert torch.equal(torch.as_tensor(model.predict(batch["images"])[0].id_map),
                       torch.as_tensor(rebuilt.predict(batch["images"])[0].id_map))
