"""INT8 variants of the S/2 trunk graph (issue 25): speed on ONNX Runtime and OpenVINO at 1 and
2 threads, and relative error vs FP32, for S8S8 / U8S8 static Q/DQ, dynamic quantisation,
NNCF's post-training quantisation, and ONNX Runtime's transformer fusions before quantising.

Every variant quantises the same MatMuls (the blocks' attn.qkv / attn.proj / mlp.fc1 /
mlp.fc2; embedders, adaLN, final layer, LayerNorm, Softmax stay FP32) of the same trunk graph
(a random-weight preset, ``gaf-trt export``'s trunk), calibrated on the same solver
trajectories (``gaf_trt.export.calibration``). Speed: M rows per call, rounds interleaved over
the variants, median ms per call; speed-up over ONNX Runtime FP32 on the FP32 graph in the
same run. Error: ``||out - fp32|| / ||fp32||`` of the features on held-out trajectories.
Prints a markdown table with the date, CPU model, flags and load average before / after
(``busy`` when the 1-minute load was above 0.5).

    python benchmarks/int8_variants.py [--latent 16] [--rows 16] [--rounds 7]
    python benchmarks/int8_variants.py --digits 50   # + digits accuracy of the kept recipes
    python benchmarks/int8_variants.py --digits 50 --digits-only
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaf_trt.device import cpu_flags, cpu_model, int8_dot_flags  # noqa: E402
from gaf_trt.export.calibration import capture  # noqa: E402
from gaf_trt.export.graphs import GRAPH_GROUPS, Limits  # noqa: E402
from gaf_trt.export.onnx_export import export_onnx  # noqa: E402
from gaf_trt.export.quantize import graphs as qg  # noqa: E402
from gaf_trt.model.presets import preset_model  # noqa: E402
from gaf_trt.precision import Precision  # noqa: E402


def trunk_graph(tmp: Path, a: argparse.Namespace):
    """The preset's trunk graph (FP32), its model and calibration / held-out items."""
    model = preset_model(a.preset, a.latent, 4, a.num_classes, 0, "cpu").float().eval()
    spec = GRAPH_GROUPS.get("split")(model, Limits(64, 8))[0]
    src = tmp / export_onnx(spec, tmp, opset=18, num_classes=a.num_classes,
                            metadata={}).onnx_file
    calib = capture(model, a.calib_samples, a.calib_steps, 0)
    held = capture(model, 4, a.calib_steps, 1000)
    items = calib.items_for(spec.input_names, a.rows, a.latent)
    test = held.items_for(spec.input_names, a.rows, a.latent)[:: max(1, a.calib_steps // 2)]
    return src, items, test


def fused_graph(src: Path, dst: Path, hidden: int, heads: int) -> Path:
    """ONNX Runtime's transformer optimizer (fusions for a BERT-like encoder) on ``src``.
    Its SkipLayerNormalization fusion fails on LayerNorm without affine (IndexError in
    fusion_skiplayernorm, onnxruntime 1.32), so that one fusion is off."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    opt = optimize_model(str(src), model_type="bert", num_heads=heads, hidden_size=hidden,
                         opt_level=1, optimization_options=options)
    print(f"fusions: {opt.get_fused_operator_statistics()}", file=sys.stderr)
    scopes = {n.name: list(n.metadata_props) for n in onnx.load(str(src)).graph.node}
    for n in opt.model.graph.node:  # the optimizer drops the name scopes quantising reads
        for prop in scopes.get(n.name, []):
            n.metadata_props.add(key=prop.key, value=prop.value)
    opt.save_model_to_file(str(dst))
    return dst


def nncf_graph(src: Path, dst: Path, items: list) -> Path:
    """NNCF post-training quantisation of the ONNX graph, the same MatMuls only."""
    import nncf
    import onnx

    model = onnx.load(str(src))
    keep = set(qg.quantizable_nodes(model))
    ignored = [n.name for n in model.graph.node if n.name not in keep]
    data = nncf.Dataset([{k: v.numpy() for k, v in it.items()} for it in items])
    q = nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER,
                      subset_size=len(items),
                      ignored_scope=nncf.IgnoredScope(names=ignored, validate=False))
    onnx.save(q, str(dst))
    return dst


def variants(tmp: Path, src: Path, items: list, a: argparse.Namespace) -> dict[str, Path]:
    """name -> graph file of every variant (a variant that fails is reported and skipped)."""
    out: dict[str, Path] = {"fp32": src}
    jobs = {
        "S8S8 static": lambda d: qg.quantize_graph(src, d, items, Precision.INT8,
                                                   scheme="s8s8"),
        "U8S8 static": lambda d: qg.quantize_graph(src, d, items, Precision.INT8,
                                                   scheme="u8s8"),
        "dynamic (U8S8)": lambda d: qg.quantize_graph_dynamic(src, d),
        "NNCF PTQ": lambda d: nncf_graph(src, d, items),
    }
    if a.fusions:
        try:
            fused = fused_graph(src, tmp / "fused.onnx", a.hidden, a.heads)
        except Exception as err:  # noqa: BLE001
            print(f"fusions: failed ({' '.join(str(err).split())[:160]})", file=sys.stderr)
            a.fusions = False
    if a.fusions:
        out["fp32 + fusions"] = fused
        jobs["U8S8 static + fusions"] = lambda d: qg.quantize_graph(
            fused, d, items, Precision.INT8, scheme="u8s8")
        jobs["dynamic + fusions"] = lambda d: qg.quantize_graph_dynamic(fused, d)
    for i, (name, job) in enumerate(jobs.items()):
        dst = tmp / f"v{i}.onnx"
        try:
            info = job(dst)
            if isinstance(info, dict) and not info.get("quantized_nodes"):
                raise RuntimeError("no MatMul of the blocks found to quantise")
            out[name] = dst
        except Exception as err:  # noqa: BLE001 - a variant that fails is a result too
            print(f"{name}: failed ({' '.join(str(err).split())[:160]})", file=sys.stderr)
    return out


def runners(path: Path, threads: int) -> dict[str, object]:
    """``{"ort": fn, "openvino": fn}`` running the graph on a feed dict (one that cannot
    load the graph is left out)."""
    import onnxruntime as ort
    import openvino as ov

    out: dict[str, object] = {}
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        out["ort"] = lambda feeds, s=sess: s.run(None, feeds)[0]
    except Exception as err:  # noqa: BLE001
        print(f"ort cannot load {path.name}: {str(err)[:120]}", file=sys.stderr)
    try:
        cm = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "INFERENCE_PRECISION_HINT": "f32",
                                                         "PERFORMANCE_HINT": "LATENCY"})
        req = cm.create_infer_request()
        out["openvino"] = lambda feeds, r=req: r.infer(feeds)[0].copy()
    except Exception as err:  # noqa: BLE001
        print(f"openvino cannot load {path.name}: {str(err)[:120]}", file=sys.stderr)
    return out


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


def measure(graphs: dict[str, Path], test: list, threads: int, rounds: int) -> dict:
    """``(variant, runtime) -> {"ms", "rel"}``: interleaved rounds, error vs ORT FP32."""
    feeds = [{k: v.numpy() for k, v in it.items()} for it in test]
    run = {(v, rt): fn for v, p in graphs.items() for rt, fn in runners(p, threads).items()}
    ref = [run["fp32", "ort"](f).astype(np.float64) for f in feeds]
    res = {}
    for key, fn in run.items():
        res[key] = {"rel": max(rel(fn(f), r) for f, r in zip(feeds, ref, strict=True)),
                    "ms": []}
        fn(feeds[0])  # warm-up (compilation, first-call allocations)
    for _ in range(rounds):
        for key, fn in run.items():
            t0 = time.perf_counter()
            fn(feeds[0])
            res[key]["ms"].append((time.perf_counter() - t0) * 1e3)
    for r in res.values():
        r["ms"] = statistics.median(r["ms"])
    return res


def loadavg() -> float:
    return os.getloadavg()[0]


def print_table(results: dict[int, dict], a: argparse.Namespace, load: tuple) -> None:
    busy = "busy" if max(load) > 0.5 else "quiet"
    flags = " ".join(f for f in sorted(cpu_flags()) if "avx512" in f or "amx" in f
                     or "vnni" in f) or "none"
    print(f"\n{dt.date.today()} · {cpu_model()} · {os.cpu_count()} CPUs · flags: {flags} · "
          f"int8 dot: {', '.join(int8_dot_flags()) or 'none'}")
    print(f"{a.preset} trunk, latent {a.latent}, M = {a.rows} rows, median of {a.rounds} "
          f"interleaved rounds; load average {load[0]:.2f} before, {load[1]:.2f} after "
          f"({busy}); speed-up over ONNX Runtime fp32 in the same run\n")
    threads = sorted(results)
    cols = [f"{rt} {t} thr" for t in threads for rt in ("ort", "openvino")]
    print("| variant | " + " | ".join(cols) + " | rel. error (ort) | rel. error (openvino) |")
    print("|---|" + "---|" * (len(cols) + 2))
    names = list(dict.fromkeys(v for res in results.values() for v, _ in res))
    for v in names:
        cells = []
        for t in threads:
            base = results[t][("fp32", "ort")]["ms"]
            for rt in ("ort", "openvino"):
                r = results[t].get((v, rt))
                cells.append(f"{base / r['ms']:.2f}× ({r['ms']:.1f} ms)" if r else "–")
        errs = [results[threads[0]].get((v, rt)) for rt in ("ort", "openvino")]
        cells += [f"{e['rel']:.1e}" if e else "–" for e in errs]
        print(f"| {v} | " + " | ".join(cells) + " |")


def digits_accuracy(a: argparse.Namespace) -> None:
    """Digits accuracy (euler-20, IER-8) of the kept recipes, exported through gaf-trt."""
    from gaf_trt.engine.base import LoadRequest, load_backend
    from gaf_trt.engine.loader import load_engine
    from gaf_trt.export.build import ExportConfig, export_engine
    from gaf_trt.export.quantize import QuantConfig
    from gaf_trt.metrics import digits as dm
    from gaf_trt.training import evaluate as ev

    nets = {"fp32 (torch)": load_backend("torch", LoadRequest("digits"))}
    tmp = Path(tempfile.mkdtemp(prefix="int8_digits."))
    for name, kw in (("S8S8 static", {"scheme": "s8s8"}), ("U8S8 static", {"scheme": "u8s8"}),
                     ("dynamic", {"mode": "dynamic"})):
        export_engine(ExportConfig("digits", str(tmp / name.split()[0]),
                                   precision=Precision.INT8, onnx_only=True, graphs=("fused",),
                                   quant=QuantConfig(accept_error=True, **kw)))
        for rt in ("ort", "openvino"):
            nets[f"{name} ({rt})"] = load_engine(tmp / name.split()[0], backend=rt, device="cpu")
    clf = dm.fit_classifier(nets["fp32 (torch)"].config.input_size, 0)
    print(f"\ndigits ({dt.date.today()}, load {loadavg():.2f}): classifier held-out accuracy "
          f"{clf.test_accuracy:.3f}, {a.digits} per class")
    print("| engine | euler-20 accuracy | IER-8 accuracy |\n|---|---|---|")
    for name, net in nets.items():
        accs = []
        for _sampler, solver, steps in ev.SAMPLERS:
            images, labels = ev.generate_per_class(net, a.digits, solver, steps, 0)
            pred, lab = clf.predict(dm.to_digit_grid(images)), labels.numpy()
            accs.append(float(np.mean([(pred[lab == c] == c).mean() for c in range(10)])))
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in accs) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S/2")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=384, help="for the fusions (S: 384)")
    ap.add_argument("--heads", type=int, default=6, help="for the fusions (S: 6)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--calib-steps", type=int, default=6)
    ap.add_argument("--no-fusions", dest="fusions", action="store_false")
    ap.add_argument("--digits", type=int, default=0, help="per-class samples (0: skip)")
    ap.add_argument("--digits-only", action="store_true", help="skip the trunk table")
    a = ap.parse_args()
    if a.digits_only:
        digits_accuracy(a)
        return
    before = loadavg()
    with tempfile.TemporaryDirectory(prefix="int8_variants.") as d:
        tmp = Path(d)
        src, items, test = trunk_graph(tmp, a)
        graphs = variants(tmp, src, items, a)
        results = {t: measure(graphs, test, t, a.rounds) for t in a.threads}
    print_table(results, a, (before, loadavg()))
    if a.digits:
        digits_accuracy(a)


if __name__ == "__main__":
    main()
