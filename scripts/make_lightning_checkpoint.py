#!/usr/bin/python3
"""Test helper (Debian's /usr/bin/python3; never part of the product): wraps a plain state-dict file
(torch.save of a dict, e.g. an afloc training checkpoint's model.pt) into a checkpoint laid out like
the authors' PyTorch Lightning 1.1 checkpoints: keys prefixed "afloc.", an OrderedDict with _metadata,
callbacks keyed by class objects and an OmegaConf-like hyper_parameters object whose classes do not
exist where the file is read (they are created here in fake modules, as the golden fixture does).

  make_lightning_checkpoint.py IN.pt OUT.ckpt
"""
import collections
import sys
import types

import torch


def fake_class(module, name):
    parts = module.split(".")
    for i in range(1, len(parts)):  # parent packages must be importable too
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    mod = sys.modules.setdefault(module, types.ModuleType(module))
    cls = type(name, (object,), {"__module__": module})
    setattr(mod, name, cls)
    return cls


def main():
    src, dst = sys.argv[1], sys.argv[2]
    sd = torch.load(src)
    state = collections.OrderedDict(("afloc." + k, v) for k, v in sd.items())
    state._metadata = collections.OrderedDict([("", {"version": 1})])
    DictConfig = fake_class("omegaconf.dictconfig", "DictConfig")
    ModelCheckpoint = fake_class("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint")
    cfg = DictConfig()
    cfg.__dict__.update({"_content": {"lightning": {"trainer": {"max_epochs": 5}}}})
    ckpt = {
        "epoch": 4,
        "global_step": 1234,
        "pytorch-lightning_version": "1.1.4",
        "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 2e-5}]}],
        "state_dict": state,
        "hparams_name": "cfg",
        "hyper_parameters": cfg,
    }
    torch.save(ckpt, dst)


if __name__ == "__main__":
    main()
