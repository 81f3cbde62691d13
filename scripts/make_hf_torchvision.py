#!/usr/bin/python3
"""Test helper (Debian's /usr/bin/python3; never part of the product): writes weights in the layouts
users download, for `afloc import` tests:
  OUT/resnet18.pth          torchvision.models.resnet18() state dict (an OrderedDict, fc included)
  OUT/bert/config.json      Hugging Face BertConfig keys for the BERT of an afloc model.pt
  OUT/bert/vocab.txt        copied
  OUT/bert/pytorch_model.bin  that BERT's weights named as BertForPreTraining saves them ("bert."
                            prefix, OrderedDict) plus its "cls." heads
  make_hf_torchvision.py MODEL.pt MODEL.json VOCAB.txt OUT
"""
import collections
import json
import os
import shutil
import sys

import torch
import torchvision


def main():
    model_pt, model_json, vocab, out = sys.argv[1:5]
    os.makedirs(os.path.join(out, "bert"), exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), os.path.join(out, "resnet18.pth"))
    sd = torch.load(model_pt)
    cfg = json.load(open(model_json))["bert"]
    prefix = "text_encoder.model."
    bert = collections.OrderedDict(("bert." + k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
    h = cfg["hidden_size"]
    bert["cls.predictions.bias"] = torch.zeros(cfg["vocab_size"])
    bert["cls.predictions.transform.dense.weight"] = torch.randn(h, h)
    bert["cls.seq_relationship.weight"] = torch.randn(2, h)
    torch.save(bert, os.path.join(out, "bert", "pytorch_model.bin"))
    hf = {"architectures": ["BertForPreTraining"], "model_type": "bert", "hidden_act": "gelu",
          "vocab_size": cfg["vocab_size"], "hidden_size": h, "num_hidden_layers": cfg["num_layers"],
          "num_attention_heads": cfg["num_heads"], "intermediate_size": cfg["intermediate_size"],
          "max_position_embeddings": cfg["max_position_embeddings"], "type_vocab_size": cfg["type_vocab_size"],
          "layer_norm_eps": cfg["layer_norm_eps"], "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
          "pad_token_id": 0}
    json.dump(hf, open(os.path.join(out, "bert", "config.json"), "w"), indent=1)
    shutil.copy(vocab, os.path.join(out, "bert", "vocab.txt"))


if __name__ == "__main__":
    main()
