"""PyTorch reference of the UltraHSTU HSTU model (research HSTU, Zhai et al. 2024) for the GPU
comparison: the same parameters (names, shapes, [in, out] weight layout), the same maths as
Sources/UltraHSTU/Model/{SequentialModel,HSTULayer}.swift and the sampled-softmax loss of
Train/RetrievalLoss.swift, written the way a PyTorch engineer would: padded [B, L, D] tensors,
batched matmuls over [B, H, L, d], dense L x L masks built once, bf16 autocast, fused AdamW,
optionally torch.compile. No Python loop over users or positions.

  check:  python3 torch_reference.py check --dump DIR
          loads DIR/weights.safetensors and DIR/step.safetensors (written by
          `hstu gpu-bench step --dump DIR`: batch, negatives, loss, every gradient of one
          dropout-free Swift/CUDA step) and compares loss and gradients (fp32 and bf16 autocast).
  time:   python3 torch_reference.py time --dim 256 --layers 4 --heads 4 --head-dim 64 --length 200 --batch 128
          prints one JSON line: ms/step and tokens/s, eager and torch.compile.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


class HSTU(torch.nn.Module):
    def __init__(self, items, dim, layers, heads, head_dim, max_len, normalizer, dropout, semi_local=0):
        super().__init__()
        self.dim, self.heads, self.dh, self.normalizer, self.dropout = dim, heads, head_dim, normalizer, dropout
        hv = heads * head_dim
        shapes = {"item_embedding": (items + 1, dim), "position_embedding": (max_len, dim)}
        for l in range(layers):
            shapes.update({f"layers.{l}.uvqk.weight": (dim, 4 * hv), f"layers.{l}.output.weight": (hv, dim),
                           f"layers.{l}.output.bias": (dim,), f"layers.{l}.rab.position": (max_len,)})
        # Module parameter names may not contain '.', so the Swift names index a ParameterList.
        # Random init for the timing runs (the check loads the Swift weights).
        self.names = list(shapes)
        self.params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes.values()])
        self.layers = layers
        # Visible (query, key) pairs for full-length sequences: causal, or Meta's semi-local attention
        # (i - j <= K1, or i among the last K2 rows), and the relative distance index of rab^p.
        i = torch.arange(max_len)[:, None]
        j = torch.arange(max_len)[None, :]
        mask = j <= i
        if semi_local > 0:
            mask &= (i - j <= semi_local) | (i >= max_len - semi_local)
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("distance", (i - j).clamp(min=0), persistent=False)

    def p(self, name):
        return self.params[self.names.index(name)]

    def forward(self, items, lengths):
        """items [B, L] (0 = padding at the end); returns the encoder output [B, L, D]."""
        B, L = items.shape
        valid = torch.arange(L, device=items.device)[None, :] < lengths[:, None]          # [B, L]
        x = self.p("item_embedding")[items] * math.sqrt(self.dim) + self.p("position_embedding")[:L]
        x = F.dropout(x, self.dropout, self.training)
        pair = self.mask[:L, :L] & valid[:, None, :] & valid[:, :, None]                   # [B, L, L]
        H, dh = self.heads, self.dh
        for l in range(self.layers):
            n = F.layer_norm(x, (self.dim,), eps=1e-6)
            u, v, q, k = F.silu(n @ self.p(f"layers.{l}.uvqk.weight")).split(H * dh, dim=-1)
            q = q.view(B, L, H, dh).transpose(1, 2)
            k = k.view(B, L, H, dh).transpose(1, 2)
            v = v.view(B, L, H, dh).transpose(1, 2)
            s = q @ k.transpose(-1, -2)
            s = s + self.p(f"layers.{l}.rab.position")[self.distance[:L, :L]].to(s.dtype)
            a = F.silu(s).masked_fill(~pair[:, None], 0) / self.normalizer
            o = (a @ v).transpose(1, 2).reshape(B, L, H * dh)
            y = u * F.layer_norm(o, (H * dh,), eps=1e-6)
            y = F.dropout(y, self.dropout, self.training)
            x = x + y @ self.p(f"layers.{l}.output.weight") + self.p(f"layers.{l}.output.bias")
        return x

    def loss(self, items, lengths, labels, negatives, temperature):
        """Sampled softmax over L2-normalised embeddings, mean over the valid tokens."""
        out = self.forward(items, lengths)
        valid = torch.arange(items.shape[1], device=items.device)[None, :] < lengths[:, None]
        user = F.normalize(out[valid].float(), dim=-1, eps=1e-6)                             # [T, D]
        table = self.p("item_embedding")
        pos = F.normalize(table[labels], dim=-1, eps=1e-6)                                  # [T, D]
        neg = F.normalize(table[negatives], dim=-1, eps=1e-6)                               # [T, R, D]
        z0 = (user * pos).sum(-1, keepdim=True) / temperature
        zn = torch.einsum("td,trd->tr", user, neg) / temperature
        zn = zn.masked_fill(negatives == labels[:, None], float("-inf"))
        z = torch.cat([z0, zn], dim=1)
        return (torch.logsumexp(z, dim=1) - z0[:, 0]).mean()


def build(meta, items, dropout, device):
    m = HSTU(items, meta["dim"], meta["layers"], meta["heads"], meta["head_dim"], meta["length"],
             meta["length"], dropout, meta.get("semi_local", 0))
    return m.to(device)


def check(args):
    dev = "cuda"
    weights = load_file(f"{args.dump}/weights.safetensors")
    step = load_file(f"{args.dump}/step.safetensors")
    from safetensors import safe_open
    with safe_open(f"{args.dump}/step.safetensors", "pt") as f:
        meta = {k: (float(v) if k == "temperature" else int(v)) for k, v in f.metadata().items()}
    m = build(meta, meta["items"], 0.0, dev)
    with torch.no_grad():
        for name, t in weights.items():
            m.p(name).copy_(t.to(dev))
    B, L = meta["batch"], meta["length"]
    items = step["items"].long().view(B, L).to(dev)
    labels = step["labels"].long().to(dev)
    negatives = step["negatives"].long().to(dev)
    lengths = torch.full((B,), L, device=dev)
    report = {"config": meta, "swift_cuda_loss": step["loss"].item()}
    for mode in ["fp32", "bf16_autocast"]:
        m.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16, enabled=mode != "fp32"):
            loss = m.loss(items, lengths, labels, negatives, meta["temperature"])
        loss.backward()
        errors = {}
        for name in m.names:
            g, ref = m.p(name).grad.float().cpu(), step["grad." + name]
            errors[name] = ((g - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()
        report[mode] = {"torch_loss": loss.item(), "max_rel_grad_error": max(errors.values()),
                        "worst_tensor": max(errors, key=errors.get), "per_tensor": errors}
    print(json.dumps(report))


def time_steps(args):
    dev = "cuda"
    torch.manual_seed(0)
    meta = {"dim": args.dim, "layers": args.layers, "heads": args.heads, "head_dim": args.head_dim,
            "length": args.length, "semi_local": args.semi_local}
    B, L, R = args.batch, args.length, args.negatives
    items = torch.randint(1, args.items + 1, (B, L), device=dev)
    labels = torch.randint(1, args.items + 1, (B * L,), device=dev)
    lengths = torch.full((B,), L, device=dev)
    result = {"config": dict(meta, batch=B, items=args.items, negatives=R), "torch": torch.__version__}
    for mode in ["eager", "compile"]:
        m = build(meta, args.items, 0.2, dev).train()
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0, fused=True)
        loss_fn = torch.compile(m.loss) if mode == "compile" else m.loss

        def step():
            negatives = torch.randint(1, args.items + 1, (B * L, R), device=dev)
            with torch.autocast("cuda", torch.bfloat16):
                loss = loss_fn(items, lengths, labels, negatives, 0.05)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        try:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(args.repeats):
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
            ms = sorted(times)[len(times) // 2]
            result[mode] = {"ms_per_step": ms, "tokens_per_s": B * L / (ms * 1e-3),
                            "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30}
        except torch.OutOfMemoryError as e:
            result[mode] = {"error": "out of memory: " + str(e).split("\n")[0]}
        del m, opt
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    print(json.dumps(result))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["check", "time"])
    ap.add_argument("--dump")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--semi-local", type=int, default=0)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--negatives", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    check(a) if a.command == "check" else time_steps(a)
