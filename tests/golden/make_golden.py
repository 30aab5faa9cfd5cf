#!/usr/bin/python3
"""Writes PyTorch reference results for the golden tests into tests/golden/data/.

Run with Debian's python3-torch: /usr/bin/python3 tests/golden/make_golden.py
Each case is a directory of .npy files (NHWC activations, HWIO weights) plus one line of
manifest.txt: `name key=value ...` saying how to build the layer. The tests never need
PyTorch; rerun this only to change the cases.
"""
import os
import shutil

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data")


def nhwc(t):
    return np.ascontiguousarray(t.detach().permute(0, 2, 3, 1).numpy())


def nchw(a, dtype):
    return torch.tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), dtype=dtype)


def hwio(w):
    return np.ascontiguousarray(w.detach().permute(2, 3, 1, 0).numpy())


def same_pad(n, k, s, d):
    out = (n + s - 1) // s
    total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
    return total // 2, total - total // 2


class Writer:
    def __init__(self):
        self.lines = []

    def case(self, name, arrays, **opts):
        d = os.path.join(OUT, name)
        os.makedirs(d)
        for key, a in arrays.items():
            np.save(os.path.join(d, key + ".npy"), np.ascontiguousarray(a))
        self.lines.append(name + " " + " ".join(f"{k}={v}" for k, v in opts.items()))


def conv_setup(rng, dtype, n, h, w, c, k, kh, kw, stride, dil, groups, bias, pad):
    """Random input/weights/bias; returns tensors and the explicit (t, b, l, r) padding."""
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    x = rng.uniform(-1, 1, (n, h, w, c)).astype(np_dtype)
    wt = torch.tensor(rng.uniform(-0.5, 0.5, (k, c // groups, kh, kw)), dtype=dtype, requires_grad=True)
    b = torch.tensor(rng.uniform(-0.5, 0.5, (k,)), dtype=dtype, requires_grad=True) if bias else None
    if pad == "same":
        t, bo = same_pad(h, kh, stride[0], dil[0])
        l, r = same_pad(w, kw, stride[1], dil[1])
    elif pad == "valid":
        t = bo = l = r = 0
    else:
        t, bo, l, r = pad
    return x, wt, b, (t, bo, l, r)


def conv_forward(xt, wt, b, pads, stride, dil, groups):
    t, bo, l, r = pads
    return F.conv2d(F.pad(xt, (l, r, t, bo)), wt, b, stride=stride, dilation=dil, groups=groups)


def pad_opt(pad):
    return pad if isinstance(pad, str) else "explicit:" + ",".join(map(str, pad))


def conv_cases(wr, rng):
    cases = [
        # name, n, h, w, c, k, kh, kw, stride, dilation, groups, bias, padding
        ("conv_3x3_same", 2, 7, 9, 3, 5, 3, 3, (1, 1), (1, 1), 1, True, "same"),
        ("conv_stride2_same", 2, 11, 8, 4, 6, 3, 3, (2, 2), (1, 1), 1, True, "same"),
        ("conv_asym_pad", 1, 6, 7, 2, 3, 2, 3, (1, 2), (1, 1), 1, True, (1, 0, 2, 1)),
        ("conv_valid_nobias", 2, 9, 9, 3, 4, 3, 3, (1, 1), (1, 1), 1, False, "valid"),
        ("conv_dilated", 1, 13, 11, 2, 3, 3, 2, (1, 1), (2, 3), 1, True, (2, 2, 1, 1)),
        ("conv_groups", 2, 8, 8, 6, 4, 3, 3, (1, 1), (1, 1), 2, True, (1, 1, 1, 1)),
        ("conv_depthwise", 2, 9, 10, 8, 8, 3, 3, (1, 1), (1, 1), 8, True, "same"),
        ("conv_1x1", 2, 5, 6, 7, 11, 1, 1, (1, 1), (1, 1), 1, True, "valid"),
        ("conv_7x7_s2_p3", 1, 17, 15, 3, 8, 7, 7, (2, 2), (1, 1), 1, False, (3, 3, 3, 3)),
        ("conv_primes", 3, 13, 7, 5, 7, 5, 3, (3, 2), (1, 2), 1, True, (2, 1, 0, 3)),
        ("conv_small_channels", 2, 23, 29, 1, 2, 3, 3, (1, 1), (2, 2), 1, True, (2, 2, 2, 2)),
    ]
    for dtype, tag in ((torch.float32, "f4"), (torch.float64, "f8")):
        for name, n, h, w, c, k, kh, kw, stride, dil, groups, bias, pad in cases:
            x, wt, b, pads = conv_setup(rng, dtype, n, h, w, c, k, kh, kw, stride, dil, groups, bias, pad)
            xt = nchw(x, dtype).requires_grad_(True)
            y = conv_forward(xt, wt, b, pads, stride, dil, groups)
            dy = torch.tensor(rng.uniform(-1, 1, y.shape), dtype=dtype)
            y.backward(dy)
            arrays = {"x": x, "w": hwio(wt), "y": nhwc(y), "dy": nhwc(dy), "dx": nhwc(xt.grad),
                      "dw": hwio(wt.grad)}
            if bias:
                arrays["b"] = b.detach().numpy()
                arrays["db"] = b.grad.numpy()
            wr.case(f"{name}_{tag}", arrays, kind="conv", dtype=tag, k=k, kh=kh, kw=kw, sh=stride[0],
                    sw=stride[1], dh=dil[0], dw=dil[1], groups=groups, bias=int(bias), pad=pad_opt(pad))


def bn_cases(wr, rng):
    cases = [
        # name, n, h, w, c, momentum, affine, track, mode, steps
        ("bn_train", 2, 5, 6, 4, 0.1, True, True, "train", 2),
        ("bn_eval", 2, 5, 6, 4, 0.1, True, True, "eval", 1),
        ("bn_noaffine", 3, 4, 4, 3, 0.1, False, True, "train", 1),
        ("bn_cumulative", 2, 3, 5, 5, None, True, True, "train", 3),
        ("bn_untracked_train", 2, 4, 3, 2, 0.1, True, False, "train", 1),
        ("bn_untracked_eval", 2, 4, 3, 2, 0.1, True, False, "eval", 1),
    ]
    for dtype, tag in ((torch.float32, "f4"), (torch.float64, "f8")):
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        for name, n, h, w, c, momentum, affine, track, mode, steps in cases:
            bn = torch.nn.BatchNorm2d(c, eps=1e-5, momentum=momentum, affine=affine,
                                      track_running_stats=track).to(dtype)
            arrays = {}
            if affine:
                with torch.no_grad():
                    bn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c)))
                    bn.bias.copy_(torch.tensor(rng.uniform(-0.5, 0.5, c)))
                arrays["gamma"] = bn.weight.detach().numpy().copy()
                arrays["beta"] = bn.bias.detach().numpy().copy()
            if track:
                with torch.no_grad():
                    bn.running_mean.copy_(torch.tensor(rng.uniform(-0.2, 0.2, c)))
                    bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, c)))
                arrays["rm0"] = bn.running_mean.numpy().copy()
                arrays["rv0"] = bn.running_var.numpy().copy()
            bn.train(mode == "train")
            for s in range(steps):
                x = (rng.uniform(-2, 3, (n, h, w, c))).astype(np_dtype)
                xt = nchw(x, dtype).requires_grad_(True)
                y = bn(xt)
                dy = torch.tensor(rng.uniform(-1, 1, y.shape), dtype=dtype)
                y.backward(dy)
                arrays.update({f"x{s}": x, f"y{s}": nhwc(y), f"dy{s}": nhwc(dy), f"dx{s}": nhwc(xt.grad)})
            if affine:
                arrays["dgamma"] = bn.weight.grad.numpy()
                arrays["dbeta"] = bn.bias.grad.numpy()
            if track:
                arrays["rm"] = bn.running_mean.numpy()
                arrays["rv"] = bn.running_var.numpy()
            wr.case(f"{name}_{tag}", arrays, kind="bn", dtype=tag,
                    momentum="none" if momentum is None else momentum, affine=int(affine),
                    track=int(track), mode=mode, steps=steps,
                    tracked=int(bn.num_batches_tracked) if track else 0)


def relu_case(wr, rng):
    x = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    x.reshape(-1)[::4] = 0.0
    xt = nchw(x, torch.float32).requires_grad_(True)
    y = torch.relu(xt)
    dy = torch.tensor(rng.uniform(-1, 1, y.shape), dtype=torch.float32)
    y.backward(dy)
    wr.case("relu_f4", {"x": x, "y": nhwc(y), "dy": nhwc(dy), "dx": nhwc(xt.grad)}, kind="relu", dtype="f4")


def convbn_cases(wr, rng):
    cases = [
        # name, n, h, w, c, k, kh, stride, groups, pad, act, mode
        ("convbn_train_relu", 2, 8, 9, 3, 5, 3, 1, 1, "same", "relu", "train"),
        ("convbn_train_none_s2", 2, 9, 7, 4, 6, 3, 2, 2, "same", "none", "train"),
        ("convbn_eval_relu", 2, 7, 8, 3, 4, 3, 1, 1, (1, 1, 1, 1), "relu", "eval"),
        ("convbn_train_smallch", 3, 15, 17, 2, 2, 3, 1, 1, "same", "relu", "train"),
        ("convbn_train_depthwise", 2, 8, 8, 8, 8, 3, 1, 8, "same", "relu", "train"),
    ]
    for dtype, tag in ((torch.float32, "f4"), (torch.float64, "f8")):
        for name, n, h, w, c, k, kh, stride, groups, pad, act, mode in cases:
            x0, wt, b, pads = conv_setup(rng, dtype, n, h, w, c, k, kh, kh, (stride, stride), (1, 1),
                                         groups, True, pad)
            bn = torch.nn.BatchNorm2d(k).to(dtype)
            with torch.no_grad():
                bn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, k)))
                bn.bias.copy_(torch.tensor(rng.uniform(-0.5, 0.5, k)))
                bn.running_mean.copy_(torch.tensor(rng.uniform(-0.2, 0.2, k)))
                bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, k)))
            arrays = {"w": hwio(wt), "b": b.detach().numpy().copy(), "gamma": bn.weight.detach().numpy().copy(),
                      "beta": bn.bias.detach().numpy().copy(), "rm0": bn.running_mean.numpy().copy(),
                      "rv0": bn.running_var.numpy().copy()}
            bn.train(mode == "train")
            steps = 2 if mode == "train" else 1
            for s in range(steps):
                x = x0 if s == 0 else rng.uniform(-1, 1, x0.shape).astype(x0.dtype)
                xt = nchw(x, dtype).requires_grad_(True)
                y = bn(conv_forward(xt, wt, b, pads, (stride, stride), (1, 1), groups))
                if act == "relu":
                    y = torch.relu(y)
                dy = torch.tensor(rng.uniform(-1, 1, y.shape), dtype=dtype)
                y.backward(dy)
                arrays.update({f"x{s}": x, f"y{s}": nhwc(y), f"dy{s}": nhwc(dy), f"dx{s}": nhwc(xt.grad)})
            arrays.update({"dw": hwio(wt.grad), "db": b.grad.numpy(), "dgamma": bn.weight.grad.numpy(),
                           "dbeta": bn.bias.grad.numpy(), "rm": bn.running_mean.numpy(), "rv": bn.running_var.numpy()})
            wr.case(f"{name}_{tag}", arrays, kind="convbn", dtype=tag, k=k, kh=kh, kw=kh, sh=stride, sw=stride,
                    dh=1, dw=1, groups=groups, bias=1, pad=pad_opt(pad), act=act, mode=mode, steps=steps)


def fold_case(wr, rng):
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    for dtype, tag in ((torch.float32, "f4"), (torch.float64, "f8")):
        conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False).to(dtype)
        bn = torch.nn.BatchNorm2d(6).to(dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(rng.uniform(-0.5, 0.5, conv.weight.shape)))
            bn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, 6)))
            bn.bias.copy_(torch.tensor(rng.uniform(-0.5, 0.5, 6)))
            bn.running_mean.copy_(torch.tensor(rng.uniform(-0.2, 0.2, 6)))
            bn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, 6)))
        conv.eval(), bn.eval()
        fused = fuse_conv_bn_eval(conv, bn)
        wr.case(f"fold_{tag}", {"w": hwio(conv.weight), "gamma": bn.weight.detach().numpy(),
                                "beta": bn.bias.detach().numpy(), "rm0": bn.running_mean.numpy(),
                                "rv0": bn.running_var.numpy(), "fw": hwio(fused.weight),
                                "fb": fused.bias.detach().numpy()},
                kind="fold", dtype=tag, k=6, kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, groups=1, bias=0,
                pad="explicit:1,1,1,1")


def main():
    torch.manual_seed(0)
    rng = np.random.RandomState(20261124)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    wr = Writer()
    conv_cases(wr, rng)
    bn_cases(wr, rng)
    relu_case(wr, rng)
    convbn_cases(wr, rng)
    fold_case(wr, rng)
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("\n".join(wr.lines) + "\n")
    print(f"{len(wr.lines)} cases written to {OUT} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
