#!/usr/bin/python3
"""Reference tensors for afloc's parity tests, computed here with Debian's python3-torch and
python3-torchvision (oracles only; the product is C++).

* resnet18.pt / resnet34.pt / resnet50.pt: torchvision ResNets (random init, BatchNorm statistics perturbed so a
  port that skipped BN would fail), classifier removed; the layer2/3/4 maps and the pooled vector.
  resnet50_dilated.pt: the same with replace_stride_with_dilation=[False, True, False].
* sklearn_metrics.pt: roc_auc_score and balanced_accuracy_score on random data with ties.
* bert_base2.pt / bert_small.pt: an independent BERT written with torch.nn.functional's
  multi_head_attention_forward, holding Hugging Face parameter names; every hidden state.

Files are torch.save'd plain dicts (nested), readable by torch::pickle_load.
Usage: /usr/bin/python3 scripts/gen_reference.py --out build/reference
"""
import argparse
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def perturb_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) * 0.4 + 0.3
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean.data = torch.randn(n, generator=gen) * 0.1
            m.running_var.data = torch.rand(n, generator=gen) + 0.5
            m.num_batches_tracked.data = torch.tensor(1234)


def resnet_case(depth, size, seed, dilate_layer3=False):
    torch.manual_seed(seed)
    kw = {"replace_stride_with_dilation": [False, True, False]} if dilate_layer3 else {}
    model = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
             50: torchvision.models.resnet50}[depth](weights=None, **kw)
    model.fc = nn.Identity()
    perturb_bn(model, torch.Generator().manual_seed(seed + 1))
    model.eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed + 2)) * 2 - 1
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer1(h)
        l2 = model.layer2(h)
        l3 = model.layer3(l2)
        l4 = model.layer4(l3)
        pooled = torch.flatten(model.avgpool(l4), 1)
        assert torch.allclose(pooled, model(x), atol=1e-5)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return {
        "meta": {"depth": torch.tensor(depth), "size": torch.tensor(size),
                 "dilate_layer3": torch.tensor(int(dilate_layer3))},
        "state_dict": sd,
        "input": x,
        "out": {"layer2": l2, "layer3": l3, "layer4": l4, "pooled": pooled},
    }


class RefBert(nn.Module):
    """BERT with Hugging Face names; attention through F.multi_head_attention_forward."""

    def __init__(self, vocab, hidden, layers, heads, inter, max_pos):
        super().__init__()
        self.heads = heads
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.embeddings.position_embeddings = nn.Embedding(max_pos, hidden)
        self.embeddings.token_type_embeddings = nn.Embedding(2, hidden)
        self.embeddings.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.embeddings.register_buffer("position_ids", torch.arange(max_pos).unsqueeze(0))
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList()
        for _ in range(layers):
            layer = nn.Module()
            layer.attention = nn.Module()
            layer.attention.self = nn.Module()
            layer.attention.self.query = nn.Linear(hidden, hidden)
            layer.attention.self.key = nn.Linear(hidden, hidden)
            layer.attention.self.value = nn.Linear(hidden, hidden)
            layer.attention.output = nn.Module()
            layer.attention.output.dense = nn.Linear(hidden, hidden)
            layer.attention.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            layer.intermediate = nn.Module()
            layer.intermediate.dense = nn.Linear(hidden, inter)
            layer.output = nn.Module()
            layer.output.dense = nn.Linear(inter, hidden)
            layer.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            self.encoder.layer.append(layer)
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(hidden, hidden)
        for p in self.parameters():  # non-trivial values everywhere, LayerNorm included
            p.data.normal_(0.0, 0.05)
        for ln in [m for m in self.modules() if isinstance(m, nn.LayerNorm)]:
            ln.weight.data += 1.0

    def forward(self, ids, mask, types):
        e = self.embeddings
        t = ids.shape[1]
        h = e.word_embeddings(ids) + e.position_embeddings(e.position_ids[:, :t]) + e.token_type_embeddings(types)
        h = e.LayerNorm(h)
        states = [h]
        pad = mask == 0
        for layer in self.encoder.layer:
            s = layer.attention.self
            x = h.transpose(0, 1)  # (T, B, H) for the functional MHA
            a, _ = F.multi_head_attention_forward(
                x, x, x, h.shape[-1], self.heads,
                torch.cat([s.query.weight, s.key.weight, s.value.weight]),
                torch.cat([s.query.bias, s.key.bias, s.value.bias]),
                None, None, False, 0.0,
                torch.eye(h.shape[-1]), torch.zeros(h.shape[-1]),  # identity out-projection
                training=False, key_padding_mask=pad, need_weights=False)
            a = a.transpose(0, 1)
            a = layer.attention.output.LayerNorm(layer.attention.output.dense(a) + h)
            i = F.gelu(layer.intermediate.dense(a))
            h = layer.output.LayerNorm(layer.output.dense(i) + a)
            states.append(h)
        pooled = torch.tanh(self.pooler.dense(h[:, 0]))
        return states, pooled


def bert_case(vocab, hidden, layers, heads, inter, max_pos, seed):
    torch.manual_seed(seed)
    model = RefBert(vocab, hidden, layers, heads, inter, max_pos).eval()
    g = torch.Generator().manual_seed(seed + 1)
    b, t = 3, 97
    ids = torch.zeros(b, t, dtype=torch.long)
    mask = torch.zeros(b, t, dtype=torch.long)
    types = torch.zeros(b, t, dtype=torch.long)
    for row, n in enumerate([97, 40, 5]):
        ids[row, :n] = torch.randint(1, vocab, (n,), generator=g)
        mask[row, :n] = 1
    types[0, 50:] = 1
    with torch.no_grad():
        states, pooled = model(ids, mask, types)
    return {
        "meta": {"vocab_size": torch.tensor(vocab), "hidden_size": torch.tensor(hidden),
                 "num_layers": torch.tensor(layers), "num_heads": torch.tensor(heads),
                 "intermediate_size": torch.tensor(inter), "max_position_embeddings": torch.tensor(max_pos)},
        "state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "input_ids": ids, "attention_mask": mask, "token_type_ids": types,
        "hidden": {str(i): s for i, s in enumerate(states)},
        "pooled": pooled,
    }


def sklearn_case(seed):
    """roc_auc_score per column and balanced_accuracy_score on random data with ties."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    g = torch.Generator().manual_seed(seed)
    n, c = 300, 6
    scores = (torch.rand(n, c, generator=g) * 20).round() / 20  # many ties
    labels = (torch.rand(n, c, generator=g) < torch.linspace(0.05, 0.6, c)).long()
    auc = torch.tensor([roc_auc_score(labels[:, k].numpy(), scores[:, k].numpy()) for k in range(c)], dtype=torch.float64)
    y_true = torch.randint(0, 5, (n,), generator=g)
    y_pred = torch.where(torch.rand(n, generator=g) < 0.6, y_true, torch.randint(0, 6, (n,), generator=g))
    bacc = balanced_accuracy_score(y_true.numpy(), y_pred.numpy())
    return {"scores": scores.double(), "labels": labels, "auc": auc,
            "y_true": y_true, "y_pred": y_pred, "balanced_accuracy": torch.tensor(bacc, dtype=torch.float64)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cases = {
        "resnet18": lambda: resnet_case(18, 160, 11),
        "resnet34": lambda: resnet_case(34, 128, 15),
        "resnet50": lambda: resnet_case(50, 224, 12),
        "resnet50_dilated": lambda: resnet_case(50, 160, 17, dilate_layer3=True),
        "bert_base2": lambda: bert_case(28996, 768, 2, 12, 3072, 512, 13),
        "bert_small": lambda: bert_case(300, 128, 4, 4, 512, 128, 14),
        "sklearn_metrics": lambda: sklearn_case(16),
    }
    for name, fn in cases.items():
        path = os.path.join(args.out, name + ".pt")
        torch.save(fn(), path)
        print(f"gen_reference: wrote {path}")


if __name__ == "__main__":
    main()
