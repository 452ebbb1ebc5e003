"""PyTorch reference of the UltraHSTU HSTU model (research HSTU, Zhai et al. 2024) for the GPU
comparison: the same parameters (names, shapes, [in, out] weight layout), the same maths as
Sources/UltraHSTU/Model/{SequentialModel,HSTULayer}.swift and the sampled-softmax loss of
Train/RetrievalLoss.swift, written the way a PyTorch engineer would: padded [B, L, D] tensors,
batched matmuls over [B, H, L, d], bf16 autocast, fused AdamW, optionally torch.compile. No Python
loop over users or positions.

Attention:
  causal:      dense [B, H, L, L] scores, the (query, key) mask of each sequence built from its length.
  semi-local:  (Meta's reading: query i sees keys i-K..i, and the last K rows of each sequence see every
               earlier key) computed blockwise so nothing of size L x L is materialised:
               band  - queries in blocks of K against their own and the previous key block,
                       [B, H, L/K, K, 2K] scores with a static band mask;
               tail  - the last K rows of each sequence (gathered) against all L keys, [B, H, K, L],
                       their outputs scattered over the band's.
               Work and memory are O(L * 3K), like the fused kernel's. `sla-check` compares it with
               the dense masked version (fp32, jagged lengths), values and gradients.

  check:  python3 torch_reference.py check --dump DIR
          loads DIR/weights.safetensors and DIR/step.safetensors (written by
          `hstu gpu-bench step --dump DIR`: batch, negatives, loss, every gradient of one
          dropout-free Swift/CUDA step) and compares loss and gradients (fp32 and bf16 autocast).
  time:   python3 torch_reference.py time --mode eager|compile --dim 256 --layers 4 --heads 4 --head-dim 64 --length 200 --batch 128 [--no-position-bias]
          prints one JSON line: ms/step, tokens/s, the first (compiling) step's seconds and peak memory.
  sla-check: python3 torch_reference.py sla-check   (blockwise vs dense semi-local attention)
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


class HSTU(torch.nn.Module):
    def __init__(self, items, dim, layers, heads, head_dim, max_len, normalizer, dropout, semi_local=0, blockwise=True,
                 position_bias=True):
        super().__init__()
        self.position_bias = position_bias
        self.dim, self.heads, self.dh, self.normalizer, self.dropout = dim, heads, head_dim, normalizer, dropout
        self.semi_local, self.blockwise, self.max_len = semi_local, blockwise and semi_local > 0, max_len
        hv = heads * head_dim
        shapes = {"item_embedding": (items + 1, dim), "position_embedding": (max_len, dim)}
        for l in range(layers):
            shapes.update({f"layers.{l}.uvqk.weight": (dim, 4 * hv), f"layers.{l}.output.weight": (hv, dim),
                           f"layers.{l}.output.bias": (dim,)})
            if position_bias:
                shapes[f"layers.{l}.rab.position"] = (max_len,)
        # Module parameter names may not contain '.', so the Swift names index a ParameterList.
        # Random init for the timing runs (the check loads the Swift weights).
        self.names = list(shapes)
        self.params = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes.values()])
        self.layers = layers

    def p(self, name):
        return self.params[self.names.index(name)]

    def biased(self, l, s, distance):
        """Scores s plus rab^p by relative distance i - j (clamped into the table); s itself without rab^p."""
        if not self.position_bias:
            return s
        return s + self.p(f"layers.{l}.rab.position")[distance.clamp(0, self.max_len - 1)].to(s.dtype)

    def dense_attention(self, l, q, k, v, lengths):
        """[B, H, L, dh] -> [B, H, L, dh] with the full [B, H, L, L] score matrix."""
        L, K = q.shape[2], self.semi_local
        i = torch.arange(L, device=q.device)[:, None]
        j = torch.arange(L, device=q.device)[None, :]
        n = lengths[:, None, None]
        pair = (j <= i) & (j < n)                                                          # [B, L, L]
        if K > 0:
            pair = pair & ((i - j <= K) | (i >= n - K))
        s = self.biased(l, q @ k.transpose(-1, -2), i - j)
        a = F.silu(s).masked_fill(~pair[:, None], 0) / self.normalizer
        return a @ v

    def semi_local_attention(self, l, q, k, v, lengths):
        """The same function as dense_attention for semi-local masks, blockwise (see the module doc)."""
        B, H, L, dh = q.shape
        K = self.semi_local
        Lp = -(-L // K) * K
        if Lp != L:
            q, k, v = (F.pad(x, (0, 0, 0, Lp - L)) for x in (q, k, v))
        nb = Lp // K
        dev = q.device
        n = lengths[:, None, None]
        # Band: query block b against key blocks b-1 and b; key column c is key (b-1)*K + c.
        def window(x):
            blocks = x.reshape(B, H, nb, K, dh)
            previous = F.pad(blocks, (0, 0, 0, 0, 1, 0))[:, :, :-1]
            return torch.cat([previous, blocks], dim=3)                                      # [B, H, nb, 2K, dh]
        r = torch.arange(K, device=dev)[:, None]
        c = torch.arange(2 * K, device=dev)[None, :]
        distance = K + r - c                                                                # i - j, [K, 2K]
        key = (torch.arange(nb, device=dev)[:, None] - 1) * K + torch.arange(2 * K, device=dev)[None, :]   # [nb, 2K]
        ok = (distance >= 0) & (distance <= K)                                              # [K, 2K]
        ok = ok[None, None] & ((key >= 0)[None, :, None, :] & (key[None, :, None, :] < n[..., None]))      # [B, nb, K, 2K]
        s = self.biased(l, q.reshape(B, H, nb, K, dh) @ window(k).transpose(-1, -2), distance)
        a = F.silu(s).masked_fill(~ok[:, None], 0) / self.normalizer
        out = (a @ window(v)).view(B, H, Lp, dh)
        # Tail: the last K rows of each sequence see every key up to themselves.
        rows = (lengths[:, None] - K).clamp(min=0) + torch.arange(K, device=dev)[None, :]  # [B, K]
        index = rows[:, None, :, None].expand(B, H, K, dh)
        j = torch.arange(Lp, device=dev)[None, None, :]
        distance = rows[:, :, None] - j                                                     # [B, K, Lp]
        ok = (distance >= 0) & (j < n)
        s = self.biased(l, q.gather(2, index) @ k.transpose(-1, -2), distance[:, None])
        a = F.silu(s).masked_fill(~ok[:, None], 0) / self.normalizer
        out = out.scatter(2, index, a @ v)
        return out[:, :, :L]

    def forward(self, items, lengths):
        """items [B, L] (0 = padding at the end); returns the encoder output [B, L, D]."""
        B, L = items.shape
        x = self.p("item_embedding")[items] * math.sqrt(self.dim) + self.p("position_embedding")[:L]
        x = F.dropout(x, self.dropout, self.training)
        H, dh = self.heads, self.dh
        attention = self.semi_local_attention if self.blockwise else self.dense_attention
        for l in range(self.layers):
            n = F.layer_norm(x, (self.dim,), eps=1e-6)
            u, v, q, k = F.silu(n @ self.p(f"layers.{l}.uvqk.weight")).split(H * dh, dim=-1)
            q = q.view(B, L, H, dh).transpose(1, 2)
            k = k.view(B, L, H, dh).transpose(1, 2)
            v = v.view(B, L, H, dh).transpose(1, 2)
            o = attention(l, q, k, v, lengths).transpose(1, 2).reshape(B, L, H * dh)
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
             meta["length"], dropout, meta.get("semi_local", 0), position_bias=meta.get("position_bias", 1) != 0)
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
    """One mode (eager or compile) per process, so a slow compile or an out-of-memory cannot hide
    the other mode's numbers; the first step (which compiles) is timed on its own."""
    dev = "cuda"
    torch.manual_seed(0)
    meta = {"dim": args.dim, "layers": args.layers, "heads": args.heads, "head_dim": args.head_dim,
            "length": args.length, "semi_local": args.semi_local, "position_bias": int(args.position_bias)}
    B, L, R = args.batch, args.length, args.negatives
    items = torch.randint(1, args.items + 1, (B, L), device=dev)
    labels = torch.randint(1, args.items + 1, (B * L,), device=dev)
    lengths = torch.full((B,), L, device=dev)
    result = {"config": dict(meta, batch=B, items=args.items, negatives=R), "torch": torch.__version__, "mode": args.mode,
              "attention": "blockwise semi-local" if args.semi_local > 0 else "dense causal"}
    m = build(meta, args.items, 0.2, dev).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0, fused=True)
    loss_fn = torch.compile(m.loss) if args.mode == "compile" else m.loss

    def step():
        negatives = torch.randint(1, args.items + 1, (B * L, R), device=dev)
        with torch.autocast("cuda", torch.bfloat16):
            loss = loss_fn(items, lengths, labels, negatives, 0.05)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    try:
        t0 = time.time()
        step()
        torch.cuda.synchronize()
        result["first_step_s"] = time.time() - t0
        for _ in range(2):
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
        result.update({"ms_per_step": ms, "tokens_per_s": B * L / (ms * 1e-3),
                       "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30})
    except torch.OutOfMemoryError as e:
        result["error"] = "out of memory: " + str(e).split("\n")[0]
    print(json.dumps(result), flush=True)


def sla_check(args):
    """Blockwise semi-local attention against the dense masked one: fp32, jagged lengths (shorter
    than K, not multiples of K, full), forward output and every gradient."""
    dev = "cuda"
    torch.manual_seed(1)
    meta = {"dim": 64, "layers": 2, "heads": 2, "head_dim": 32, "length": 300, "semi_local": 64}
    lengths = torch.tensor([300, 250, 40, 129], device=dev)
    items = torch.randint(1, 501, (4, 300), device=dev) * (torch.arange(300, device=dev)[None] < lengths[:, None])
    valid = torch.arange(300, device=dev)[None] < lengths[:, None]
    labels = torch.randint(1, 501, (int(valid.sum()),), device=dev)
    negatives = torch.randint(1, 501, (labels.shape[0], 16), device=dev)
    report = {}
    models = {}
    for blockwise in [False, True]:
        torch.manual_seed(2)
        m = HSTU(500, 64, 2, 2, 32, 300, 300, 0.0, semi_local=64, blockwise=blockwise).to(dev)
        with torch.no_grad():
            out = m.forward(items, lengths)[valid]
        loss = m.loss(items, lengths, labels, negatives, 0.05)
        loss.backward()
        models[blockwise] = (m, out, loss.item())
    (md, od, ld), (mb, ob, lb) = models[False], models[True]
    report["output_rel_error"] = ((ob - od).abs().max() / od.abs().max()).item()
    report["loss"] = {"dense": ld, "blockwise": lb}
    report["max_grad_rel_error"] = max(((mb.p(n).grad - md.p(n).grad).abs().max() / md.p(n).grad.abs().max().clamp(min=1e-30)).item()
                                       for n in md.names)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["check", "time", "sla-check"])
    ap.add_argument("--mode", choices=["eager", "compile"], default="eager")
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
    ap.add_argument("--no-position-bias", dest="position_bias", action="store_false",
                    help="no rab^p (the ULTRA-HSTU paper's Eq. 3 / DLRMv3 layer); the check reads it from the dump")
    a = ap.parse_args()
    {"check": check, "time": time_steps, "sla-check": sla_check}[a.command](a)
