"""ONNX export of an inverter with its generator: image in -> codes and one rendered image out.

    from clcae.export import export_onnx, ort_session, check_export
    names = export_onnx(inv, "clcae.onnx", batch=1)          # ('w', 'wplus', 'f', 'image_wplus_f') for CLCAE
    session = ort_session("clcae.onnx")                       # needs onnxruntime: pip install -e ".[export]"
    outs = session.run(None, {"image": x.numpy()})            # x [batch, 3, H, W] in [-1, 1] at inv.input_size

The graph is the inference fast path (``impl='auto'`` on the CPU, fp32, contiguous): batch norms folded, FIR filters
as depthwise (transposed) convolutions with their separable factors computed before the trace, the modulated
convolution's per-sample weight built from the style. The batch size is fixed at export (the grouped modulated
convolution's weight shape depends on it). For CLCAE the average image is stored in the graph (the encoder sees
``x - avg``). Exporting needs ``onnx`` (the ``[export]`` extra); running it, ``onnxruntime``.
"""
from __future__ import annotations

import os
import hashlib
from pathlib import Path
from typing import Sequence
import torch
from torch import nn

__all__ = ["InverterGraph", "OnnxInverter", "export_onnx", "ort_session", "check_export", "output_names"]


def _images(inv, image: str | Sequence[str] | None) -> tuple[str, ...]:
    images = (inv.image_names[0],) if image is None else ((image,) if isinstance(image, str) else tuple(image))
    bad = [i for i in images if i not in inv.image_names]
    if bad or not images:
        raise ValueError(f"{type(inv).__name__} renders {inv.image_names}; got image={image!r}")
    return images


def output_names(inv, image: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Names of the graph outputs for ``inv`` rendering ``image`` ('wplus_f', 'wplus', 'w', or several)."""
    codes = ("w", "wplus", "f") if inv.arch == "clcae" else (("w", "wplus") if inv.arch == "e4e" else ("wplus",))
    return codes + tuple(f"image_{i}" for i in _images(inv, image))


class InverterGraph(nn.Module):
    """``forward(image) -> tuple`` of :func:`output_names` (codes, then the images, unclamped, full resolution)."""

    def __init__(self, inverter, image: str | Sequence[str] | None = None):
        super().__init__()
        self.inverter = inverter
        self.images = _images(inverter, image)
        self.names = output_names(inverter, self.images)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inverter(image, images=self.images)
        return tuple(out[n] for n in self.names)


def export_onnx(inverter, path: str | os.PathLike, batch: int = 1, image: str | Sequence[str] | None = None,
                opset: int = 17, impl: str = "fast") -> tuple[str, ...]:
    """Write ``inverter`` (eval mode, on the CPU) as an ONNX graph with input ``image`` [batch, 3, H, W]; returns the
    output names. ``impl``: ``'fast'`` (the inference fast path) or ``'ref'`` (the official arithmetic). The
    inverter is left as it was (impl, memory format, precision)."""
    if impl not in ("fast", "ref"):
        raise ValueError(f"impl must be 'fast' or 'ref'; got {impl!r}")
    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError as e:
        raise ImportError("exporting to ONNX needs the onnx package: pip install -e \".[export]\"") from e
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    graph = InverterGraph(inverter, image).eval()
    impls = {m: m.impl for m in inverter.modules() if hasattr(m, "impl")}
    state = (inverter.memory_format, inverter.precision, inverter.decoder.memory_format)
    x = torch.zeros(batch, 3, *inverter.input_size)
    try:
        inverter.set_impl(impl).set_memory_format(torch.contiguous_format).set_precision("fp32")
        inverter.decoder.set_memory_format(torch.contiguous_format)
        if hasattr(inverter, "average_image"):
            inverter.average_image()  # rendered now if needed, a constant in the graph
        with torch.no_grad():
            graph(x)  # prepares every cached kernel (FIR factors, folded batch norms) outside the trace
            torch.onnx.export(graph, (x,), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=list(graph.names), do_constant_folding=True)
    finally:
        for m, impl in impls.items():
            m.impl = impl
        inverter.memory_format, inverter.precision = state[0], state[1]
        inverter.decoder.set_memory_format(state[2])
    return graph.names


def ort_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` using ``threads`` (default: torch's thread count)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError("running the ONNX graph needs onnxruntime: pip install -e \".[export]\"") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no busy-waiting worker threads between runs: they would take the CPU from whatever runs next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(Path(path)), sess_options=opts, providers=["CPUExecutionProvider"])


def check_export(inverter, path: str | os.PathLike, x: torch.Tensor, image: str | Sequence[str] | None = None,
                 session=None) -> dict[str, float]:
    """Max absolute difference between ONNX Runtime and PyTorch (fp32, this inverter's current impl) for each
    output, on input ``x`` [batch, 3, H, W]."""
    graph = InverterGraph(inverter, image).eval()
    with torch.no_grad():
        ref = graph(x)
    session = session or ort_session(path)
    got = session.run(None, {"image": x.detach().cpu().numpy()})
    return {n: (torch.from_numpy(g) - r.float()).abs().max().item() for n, g, r in zip(graph.names, got, ref)}


class OnnxInverter:
    """An inverter that runs in ONNX Runtime (``invert.py --backend onnxruntime``): the same ``invert(x, images=)``
    as the PyTorch :class:`~clcae.inversion.Inverter` it wraps (whose other attributes it passes through), fp32.

    The graph renders every image the method has and is exported once per (checkpoint weights, average image,
    batch size) into ``cache_dir`` (default ``$CLCAE_ONNX_CACHE``, else ``~/.cache/clcae/onnx``); a smaller batch
    is padded to the graph's size. Why: on a CPU it measured faster than the PyTorch path (``docs/PERFORMANCE.md``).
    """

    def __init__(self, inverter, batch: int = 1, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None):
        self._inv = inverter
        self.batch = int(batch)
        if getattr(inverter, "arch", None) == "clcae":
            inverter.average_image()  # baked into the graph
        cache_dir = cache_dir or os.environ.get("CLCAE_ONNX_CACHE") or Path.home() / ".cache" / "clcae" / "onnx"
        self.path = Path(cache_dir) / f"{self._key()}.onnx"
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            export_onnx(inverter, tmp, batch=self.batch, image=inverter.image_names)
            os.replace(tmp, self.path)
        self.names = output_names(inverter, inverter.image_names)
        self.session = ort_session(self.path, threads)

    def _key(self) -> str:
        h = hashlib.sha256()
        h.update(repr((self._inv.config, self.batch, torch.__version__)).encode())
        tensors = dict(self._inv.state_dict())
        tensors["latent_avg"] = self._inv.latent_avg
        if getattr(self._inv, "avg_image", None) is not None:
            tensors["avg_image"] = self._inv.avg_image
        for name in sorted(tensors):
            h.update(name.encode())
            h.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:24]

    def __getattr__(self, name):
        return getattr(self._inv, name)

    def invert(self, x: torch.Tensor, avg_image: torch.Tensor | None = None, images=None) -> dict[str, torch.Tensor]:
        """Like :meth:`clcae.inversion.Inverter.invert` (the stored average image only; every image is rendered)."""
        if avg_image is not None:
            raise ValueError("the ONNX Runtime backend uses the average image stored in its graph")
        n = x.shape[0]
        out: dict[str, list] = {k: [] for k in self.names}
        for start in range(0, n, self.batch):
            chunk = x[start:start + self.batch].detach().float().cpu()
            pad = self.batch - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            for k, v in zip(self.names, self.session.run(None, {"image": chunk.contiguous().numpy()})):
                out[k].append(torch.from_numpy(v)[:self.batch - pad])
        return {k: torch.cat(v).to(x.device) for k, v in out.items()}
