"""cmlab_torch.py: PyTorch twins of cmlab's networks, and a loader for cmlab checkpoints.

    UNet(config)     the U-Net of src/nn/unet.h     (state_dict keys == cmlab parameter names)
    AmedMLP(config)  the AMED predictor of src/nn/mlp.h
    load_checkpoint(path, weights="online", config=None, model="unet") -> the twin, eval mode

A config is a dict whose keys are the fields of cmlab's UNetConfig / MlpConfig (UNET_DEFAULTS,
MLP_DEFAULTS list them with cmlab's defaults). Both twins compute exactly what cmlab computes, in
any dtype (the tests run them in float64 as the oracle):

    F = net(x, cnoise_t)                   x already multiplied by c_in, cnoise_t = c_noise(t) [N]
    F = net(x, cnoise_t, cnoise_u)         BCM (two_times)
    F, mid = net(x, cnoise_t, return_bottleneck=True)
    F = net(x, cnoise_t, dropout=(seed, stream, step), sample0=0)   cmlab's own dropout masks

Preconditioning (c_skip, c_out, c_in, c_noise) is not part of the network, as in cmlab.

Experiment keys are typed by cmlab's key table (src/train/experiment.c), read from its generated
Markdown list (`cmlab train --keys-markdown`; experiments/README.md of the checkout holds it and
tests/test_readme.c keeps it current): key_table() returns it, config_from_text() parses a
resolved configuration with it, so every value the table allows parses (enums such as
model.skip_scale = sqrt_half stay names; UNet maps them).

Two things need tests/torch/philox.py (the numpy twin of cmlab's counter-based RNG), imported
from the repository this file lives in: the frozen Fourier frequencies W ~ N(0, scale^2), which
cmlab draws from (seed, stream UNET_STREAM_FOURIER) rather than storing as a parameter, and
dropout with cmlab's masks. A checkpoint that stores /buffers/map_noise.freqs is used instead.
"""
import configparser
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

UNET_STREAM_FOURIER = 0x464F5552  # unet.h
BLOCK_GN_EPS = 1e-6               # every GroupNorm of the U-Net (DDPM++)

UNET_DEFAULTS = dict(
    img_channels=1, img_h=28, img_w=28, base_channels=32, channel_mult=[1, 2, 2], num_blocks=2,
    attn_resolutions=[], mid_attn=True, attn_heads=1, dropout=0.0, emb_type="positional",
    fourier_scale=16.0, skip_scale=math.sqrt(0.5), two_times=False, seed=0)

# What the choices of the enum model.skip_scale mean (experiment.c: config_skip_scale). The
# choices themselves come from the key table; skip_scale() fails on one missing here.
SKIP_SCALES = {"sqrt_half": math.sqrt(0.5), "one": 1.0}

MLP_DEFAULTS = dict(in_dim=64, hidden=128, out_dim=4, noise_channels=8, scale_dir=0.01, scale_time=0.0)


def _philox():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "torch")
    if not os.path.exists(os.path.join(path, "philox.py")):
        raise ImportError("cmlab_torch: tests/torch/philox.py not found next to tools/ (needed for "
                          "Fourier frequencies and cmlab dropout masks); use it from a cmlab checkout")
    if path not in sys.path:
        sys.path.insert(0, path)
    import philox
    return philox


def skip_scale(value):
    """The factor on residual sums: a number, or a choice name of model.skip_scale."""
    if isinstance(value, str):
        if value not in SKIP_SCALES:
            raise ValueError("cmlab_torch: model.skip_scale = %r: the twin knows %s"
                             % (value, ", ".join(SKIP_SCALES)))
        return SKIP_SCALES[value]
    return float(value)


def gn_groups(channels):
    """min(32, C/4), lowered to the nearest divisor of C (layers.c: layers_gn_groups)."""
    g = max(1, min(32, channels // 4))
    while channels % g:
        g -= 1
    return g


def positional_freqs(channels):
    """f_k = (1/10000)^(k/(half-1)), computed in float64 and rounded to float32 as cmlab does."""
    half = channels // 2
    return np.float32(np.power(1e-4, np.arange(half, dtype=np.float64) / (half - 1)))


def fourier_W(channels, scale, seed):
    """W [half] = scale * normal(seed, UNET_STREAM_FOURIER, 0, 1 sample) in float32 (layers.c)."""
    half = channels // 2
    z = _philox().normal(int(seed), UNET_STREAM_FOURIER, 0, 1, 0, half)[0]
    return z * np.float32(scale)


def sincos(c, freqs):
    """[sin(c f), cos(c f)] for c [N] (any shape with N values) and f [half]."""
    phase = c.reshape(-1, 1) * freqs.to(c.dtype).reshape(1, -1)
    return torch.cat([phase.sin(), phase.cos()], dim=1)


def cmlab_dropout(h, p, rng, sample0):
    """op_dropout with cmlab's mask: keep where bernoulli(seed, stream, step, N, sample0,
    per_sample, 1-p) is 1, scale by 1/(1-p); 1-p and its inverse in float32, as cmlab."""
    seed, stream, step = rng
    keep = np.float32(1) - np.float32(p)
    per = int(np.prod(h.shape[1:]))
    m = _philox().bernoulli(int(seed), int(stream), int(step), h.shape[0], sample0, per, keep)
    return h * torch.from_numpy(m.reshape(h.shape)).to(h.dtype) * float(np.float32(1) / keep)


# ---- layers (layers.h) ----

def conv(cin, cout, k, stride=1, bias=True):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


def group_norm(channels):
    return nn.GroupNorm(gn_groups(channels), channels, eps=BLOCK_GN_EPS)


class Attention(nn.Module):
    """out = (x + proj(v softmax(q^T k / sqrt(d))^T)) * skip_scale, heads over channel blocks.
    k has no bias (softmax ignores the per-query constant q.b it would add)."""

    def __init__(self, channels, heads, skip_scale):
        super().__init__()
        self.heads, self.skip_scale = heads, skip_scale
        self.norm = group_norm(channels)
        self.q, self.v = conv(channels, channels, 1), conv(channels, channels, 1)
        self.k = conv(channels, channels, 1, bias=False)
        self.proj = conv(channels, channels, 1)

    def forward(self, x):
        N, C, H, W = x.shape
        d = C // self.heads
        h = self.norm(x)
        q, k, v = (m(h).reshape(N * self.heads, d, H * W) for m in (self.q, self.k, self.v))
        a = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(d), dim=-1)
        o = torch.einsum("bcj,bij->bci", v, a).reshape(N, C, H, W)
        return (x + self.proj(o)) * self.skip_scale


class ResBlock(nn.Module):
    """h = conv1(silu(norm1(x))) + temb(emb); h = conv2(dropout(silu(norm2(h))));
    out = (skip(x) + h) * skip_scale. emb already ends in a SiLU."""

    def __init__(self, cin, cout, emb_dim, dropout, skip_scale):
        super().__init__()
        self.p, self.skip_scale = dropout, skip_scale
        self.norm1, self.conv1 = group_norm(cin), conv(cin, cout, 3)
        self.temb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = group_norm(cout), conv(cout, cout, 3)
        self.skip = conv(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb, rng=None, sample0=0):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(emb)[:, :, None, None]
        h = F.silu(self.norm2(h))
        if self.p > 0 and rng is not None:
            h = cmlab_dropout(h, self.p, rng, sample0)
        elif self.p > 0:
            h = F.dropout(h, self.p, self.training)
        h = self.conv2(h)
        return ((self.skip(x) if self.skip is not None else x) + h) * self.skip_scale


class Upsample(nn.Conv2d):
    """nearest 2x, then a 3x3 conv (parameters are the conv's own: <name>.weight/.bias)."""

    def __init__(self, channels):
        super().__init__(channels, channels, 3, padding=1)

    def forward(self, x):
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))


# ---- the U-Net (unet.h) ----

class UNet(nn.Module):
    def __init__(self, config):
        super().__init__()
        cfg = dict(UNET_DEFAULTS)
        cfg.update(config)
        self.cfg = cfg
        B, L, nb = cfg["base_channels"], len(cfg["channel_mult"]), cfg["num_blocks"]
        E = 4 * B
        p, s = cfg["dropout"], skip_scale(cfg["skip_scale"])
        if cfg["emb_type"] == "fourier":
            freqs = np.float32(2.0 * np.pi * fourier_W(B, cfg["fourier_scale"], cfg["seed"]).astype(np.float64))
        elif cfg["emb_type"] == "positional":
            freqs = positional_freqs(B)
        else:
            raise ValueError("cmlab_torch: emb_type %r (positional or fourier)" % cfg["emb_type"])
        # Not in the state_dict: cmlab keeps it out of the weight sets (unet.h).
        self.register_buffer("freqs", torch.from_numpy(freqs), persistent=False)
        self.map_layer0, self.map_layer1 = nn.Linear(B, E), nn.Linear(E, E)
        if cfg["two_times"]:
            self.map_u_layer0, self.map_u_layer1 = nn.Linear(B, E), nn.Linear(E, E)
            self.map_align = nn.Linear(2 * E, E, bias=False)

        self.conv_in = conv(cfg["img_channels"], B, 3)
        skips, ch = [B], B
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        for l in range(L):
            lv, out = nn.ModuleDict(), B * cfg["channel_mult"][l]
            attn = (cfg["img_h"] >> l) in cfg["attn_resolutions"]
            for i in range(nb):
                lv["block%d" % i] = ResBlock(ch, out, E, p, s)
                ch = out
                if attn:
                    lv["attn%d" % i] = Attention(ch, cfg["attn_heads"], s)
                skips.append(ch)
            if l < L - 1:
                lv["down"] = conv(ch, ch, 3, stride=2)
                skips.append(ch)
            self.enc[str(l)] = lv
        self.mid = nn.ModuleDict({"block0": ResBlock(ch, ch, E, p, s)})
        if cfg["mid_attn"]:
            self.mid["attn"] = Attention(ch, cfg["attn_heads"], s)
        self.mid["block1"] = ResBlock(ch, ch, E, p, s)
        for l in reversed(range(L)):
            lv, out = nn.ModuleDict(), B * cfg["channel_mult"][l]
            attn = (cfg["img_h"] >> l) in cfg["attn_resolutions"]
            for i in range(nb + 1):
                lv["block%d" % i] = ResBlock(ch + skips.pop(), out, E, p, s)
                ch = out
                if attn:
                    lv["attn%d" % i] = Attention(ch, cfg["attn_heads"], s)
            if l > 0:
                lv["up"] = Upsample(ch)
            self.dec[str(l)] = lv
        self.norm_out = nn.GroupNorm(gn_groups(ch), ch, eps=1e-6)
        self.conv_out = conv(ch, cfg["img_channels"], 3)

    def embed(self, cnoise_t, cnoise_u=None):
        e = self.map_layer1(F.silu(self.map_layer0(sincos(cnoise_t, self.freqs))))
        if self.cfg["two_times"]:
            eu = self.map_u_layer1(F.silu(self.map_u_layer0(sincos(cnoise_u, self.freqs))))
            e = self.map_align(torch.cat([e, eu], dim=1))
        return F.silu(e)

    def forward(self, x, cnoise_t, cnoise_u=None, dropout=None, sample0=0, return_bottleneck=False):
        """dropout: None (torch's dropout in train mode, none in eval) or (seed, stream, step):
        cmlab's masks, ResBlock i (forward order) on stream + i."""
        if self.cfg["two_times"] != (cnoise_u is not None):
            raise ValueError("cmlab_torch: cnoise_u must be given exactly when two_times")
        emb = self.embed(cnoise_t, cnoise_u)
        count = [0]

        def block(m, h):
            rng = None
            if dropout is not None:
                rng = (dropout[0], dropout[1] + count[0], dropout[2])
            count[0] += 1
            return m(h, emb, rng, sample0)

        h = self.conv_in(x)
        skips = [h]
        L, nb = len(self.cfg["channel_mult"]), self.cfg["num_blocks"]
        for l in range(L):
            lv = self.enc[str(l)]
            for i in range(nb):
                h = block(lv["block%d" % i], h)
                if "attn%d" % i in lv:
                    h = lv["attn%d" % i](h)
                skips.append(h)
            if "down" in lv:
                h = lv["down"](h)
                skips.append(h)
        h = block(self.mid["block0"], h)
        if "attn" in self.mid:
            h = self.mid["attn"](h)
        h = block(self.mid["block1"], h)
        mid = h
        for l in reversed(range(L)):
            lv = self.dec[str(l)]
            for i in range(nb + 1):
                h = block(lv["block%d" % i], torch.cat([h, skips.pop()], dim=1))
                if "attn%d" % i in lv:
                    h = lv["attn%d" % i](h)
            if "up" in lv:
                h = lv["up"](h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return (out, mid) if return_bottleneck else out


# ---- the AMED predictor (mlp.h) ----

class AmedMLP(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        cfg = dict(MLP_DEFAULTS)
        cfg.update(config or {})
        self.cfg = cfg
        nc, z = cfg["noise_channels"], cfg["out_dim"] + 2 * cfg["noise_channels"]
        self.register_buffer("freqs", torch.from_numpy(positional_freqs(nc)), persistent=False)
        self.map_layer0 = nn.Linear(nc, nc)
        self.enc_layer0 = nn.Linear(cfg["in_dim"], cfg["hidden"])
        self.enc_layer1 = nn.Linear(cfg["hidden"], cfg["out_dim"])
        self.fc_r = nn.Linear(z, 1)
        if cfg["scale_dir"] > 0:
            self.fc_scale_dir = nn.Linear(z, 1)
        if cfg["scale_time"] > 0:
            self.fc_scale_time = nn.Linear(z, 1)

    def forward(self, bottleneck, sigma_cur, sigma_next):
        """bottleneck [N,in_dim]; sigmas are floats -> dict r, and c / a when their heads exist."""
        N = bottleneck.shape[0]
        s = torch.tensor([sigma_cur, sigma_next], dtype=bottleneck.dtype)
        temb = F.silu(self.map_layer0(sincos(s, self.freqs))).reshape(1, -1).expand(N, -1)
        u = self.enc_layer1(F.silu(self.enc_layer0(bottleneck)))
        z = torch.cat([u, temb], dim=1)
        out = {"r": torch.sigmoid(self.fc_r(z)).reshape(N)}
        for head, key, S in (("fc_scale_dir", "c", self.cfg["scale_dir"]), ("fc_scale_time", "a", self.cfg["scale_time"])):
            if S > 0:
                out[key] = (2 * S * torch.sigmoid(getattr(self, head)(z)) + (1 - S)).reshape(N)
        return out


def bottleneck_input(mid):
    """mid [N,C,h,w] -> the channel mean flattened [N,h*w] (mlp_bottleneck_input), detached."""
    return mid.detach().mean(dim=1).reshape(mid.shape[0], -1)


# ---- checkpoints ----

# [model] keys of an experiment file whose names differ from UNetConfig's fields.
_INI_KEYS = {"channels": "base_channels"}
_KEYS_BEGIN, _KEYS_END = "<!-- keys:begin", "<!-- keys:end -->"
_KEY_TABLES = {}
_KEY_DEFAULTS = {}


def _keys_path(path):
    if path is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "experiments", "README.md")
    return os.path.abspath(path)


def key_table(path=None):
    """cmlab's key table: {"section.key": (type, choices)}, type one of the table's type names
    (int, float, bool, string, enum, int list, float list), choices the names of an enum (else
    None). path: a file holding the generated list (`cmlab train --keys-markdown > keys.md`, or a
    README with its keys:begin/keys:end markers); default: experiments/README.md of the checkout
    this file lives in."""
    path = _keys_path(path)
    if path in _KEY_TABLES:
        return _KEY_TABLES[path]
    try:
        text = open(path).read()
    except OSError as e:
        raise OSError("cmlab_torch: cannot read cmlab's key list %s (%s): use this file from a cmlab "
                      "checkout, or pass keys=<the output of `cmlab train --keys-markdown`>" % (path, e))
    if _KEYS_BEGIN in text:
        text = text[text.index("\n", text.index(_KEYS_BEGIN)) + 1:text.index(_KEYS_END)]
    table, defaults = {}, {}
    for line in text.splitlines():
        # | `section.key` | type | `default` | allowed | description |
        if not line.startswith("| `"):
            continue
        cols = [c.strip() for c in line.strip().strip("|").split(" | ")]
        name, kind, allowed = cols[0].strip("`"), cols[1], cols[3]
        choices = None
        if kind == "enum":
            if not allowed.startswith("one of "):
                raise ValueError("cmlab_torch: %s: enum %s lists no choices: %r" % (path, name, allowed))
            choices = [c.strip() for c in allowed[len("one of "):].split(",")]
        table[name] = (kind, choices)
        defaults[name] = "" if cols[2] == '`""`' else cols[2].strip("`")
    if not table:
        raise ValueError("cmlab_torch: %s holds no key list (`cmlab train --keys-markdown`)" % path)
    _KEY_TABLES[path] = table
    _KEY_DEFAULTS[path] = defaults
    return table


def _resolved_strings(text, keys=None):
    """{"section.key": value text} of every key of the table (its order), the text's or the default."""
    key_table(keys)
    values = dict(_KEY_DEFAULTS[_keys_path(keys)])
    ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    ini.optionxform = str
    ini.read_string(text)
    for section in ini.sections():
        for key, value in ini.items(section):
            values["%s.%s" % (section, key)] = value.strip()
    return values


def resolved_config(text, keys=None):
    """Every key of cmlab's key table, typed as parse_value types it: {"section.key": value}, the
    value of the experiment text (INI) where it sets the key, else the table's default. So a
    PyTorch twin sees the configuration `cmlab train` runs with. A key the table does not know
    raises KeyError, as cmlab refuses it."""
    return {name: parse_value(name, value, keys) for name, value in _resolved_strings(text, keys).items()}


def resolved_text(text, keys=None):
    """The resolved configuration as INI text, every key of the table (the checkpoint attribute
    `config` that cmlab writes holds the same)."""
    lines, section = [], None
    for name, value in _resolved_strings(text, keys).items():
        parse_value(name, value, keys)
        sec, key = name.split(".", 1)
        if sec != section:
            lines.append("%s[%s]" % ("\n" if section else "", sec))
            section = sec
        lines.append("%s = %s" % (key, value))
    return "\n".join(lines) + "\n"


_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False,
          "1": True, "0": False}   # experiment.c: parse_bool
_PARSE = {
    "int": int,
    "float": float,
    "bool": lambda t: _BOOLS[t.lower()],
    "string": lambda t: t,
    "int list": lambda t: [int(v) for v in t.split(",") if v.strip()],
    "float list": lambda t: [float(v) for v in t.split(",") if v.strip()],
}


def parse_value(name, text, keys=None):
    """The value of key "section.key" from its text, typed by the key table: int, float, bool,
    string, a list, or an enum's choice name (checked against the table's choices)."""
    table = key_table(keys)
    if name not in table:
        raise KeyError("cmlab_torch: %s is not in cmlab's key table (%d keys): is the key list "
                       "older than the checkpoint?" % (name, len(table)))
    kind, choices = table[name]
    text = text.strip()
    if kind == "enum":
        if text not in choices:
            raise ValueError("cmlab_torch: %s = %r: not one of %s" % (name, text, ", ".join(choices)))
        return text
    if kind not in _PARSE:
        raise ValueError("cmlab_torch: %s has type %r, which this file does not know" % (name, kind))
    try:
        return _PARSE[kind](text)
    except (ValueError, KeyError):
        raise ValueError("cmlab_torch: %s = %r is not a valid %s" % (name, text, kind))


def config_from_text(text, section="model", keys=None):
    """The network fields of a resolved experiment configuration (INI text): the keys of
    [<section>] (model.channels is base_channels) and experiment.seed, each typed by cmlab's key
    table (keys: as key_table's path); two_times for method = bcm (its U-Net has BCM's u branch)."""
    ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    ini.optionxform = str          # key names are case-sensitive (cd.N)
    ini.read_string(text)
    cfg = {}
    if ini.has_section(section):
        for key, value in ini.items(section):
            cfg[_INI_KEYS.get(key, key)] = parse_value("%s.%s" % (section, key), value, keys)
    if ini.has_option("experiment", "seed"):
        cfg["seed"] = parse_value("experiment.seed", ini.get("experiment", "seed"), keys)
    if section == "model" and ini.has_option("experiment", "method"):
        cfg["two_times"] = ini.get("experiment", "method").strip() == "bcm"
    return cfg


_DATASET_IMAGES = {"cifar10": (3, 32), "fashion-mnist": (1, 28), "mnist": (1, 28)}


def image_config(text, keys=None):
    """The image fields (img_channels, img_h, img_w) of a resolved configuration's data set:
    CIFAR-10 3x32x32, (Fashion-)MNIST 1x28x28, data.pad_to when set; {} for a folder data set,
    whose images only the files know."""
    ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    ini.read_string(text)
    dataset = ini.get("data", "dataset", fallback="fashion-mnist").strip()
    if dataset not in _DATASET_IMAGES:
        return {}
    c, side = _DATASET_IMAGES[dataset]
    pad = parse_value("data.pad_to", ini.get("data", "pad_to", fallback="0"), keys)
    side = max(side, pad)
    return {"img_channels": c, "img_h": side, "img_w": side}


def _attr_text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def load_checkpoint(path, weights="online", config=None, model="unet", keys=None):
    """The twin with weights /weights/<weights>/<name> of a cmlab checkpoint (weights: "online",
    "target", "ema/0.9999", ...). Its configuration is the root attribute "config" (resolved INI
    text, typed by the key table: keys as key_table's path; the image size from its data set,
    image_config) when present, overridden by the `config` dict; without the attribute, `config` is required. model: "unet" or "amed". Returns
    the twin in eval mode, float32."""
    import h5py
    with h5py.File(path, "r") as f:
        cfg = {}
        if "config" in f.attrs:
            text = _attr_text(f.attrs["config"])
            cfg = config_from_text(text, "amed" if model == "amed" else "model", keys)
            if model != "amed":
                cfg.update(image_config(text, keys))
        elif config is None:
            raise ValueError("%s has no 'config' attribute: pass config={...} (UNetConfig fields)" % path)
        cfg.update(config or {})
        net = AmedMLP(cfg) if model == "amed" else UNet(cfg)
        group = "weights/%s" % weights
        if group not in f:
            raise KeyError("%s: no group /%s (has: %s)" % (path, group, ", ".join(_weight_sets(f))))
        state = {name: torch.from_numpy(np.asarray(f[group][name])) for name in f[group]
                 if isinstance(f[group][name], h5py.Dataset)}
        if model != "amed" and "buffers/map_noise.freqs" in f and net.cfg["emb_type"] == "fourier":
            W = np.asarray(f["buffers/map_noise.freqs"], np.float32)
            net.freqs.copy_(torch.from_numpy(np.float32(2.0 * np.pi * W.astype(np.float64))))
    net.load_state_dict(state, strict=True)
    return net.eval()


def _weight_sets(f):
    """The weight sets a checkpoint holds: online, target, ema/<rate>, ..."""
    sets = []
    for name, obj in f.get("weights", {}).items():
        sets += ["ema/" + rate for rate in obj] if name == "ema" else [name]
    return sets
