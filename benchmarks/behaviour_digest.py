"""Did a change change behaviour? Seeded CLI commands on two git revisions, a normalised digest of every output.

    python benchmarks/behaviour_digest.py BASE [HEAD]                 # exit 1 and a table when anything differs
    python benchmarks/behaviour_digest.py --revision-only REV --json FILE   # digest one revision, keep it
    python benchmarks/behaviour_digest.py FILE.json [HEAD]            # a kept digest as BASE

Each revision is checked out into a temporary git worktree (HEAD defaults to the working tree itself) and runs
COMMANDS below (`python -m genvision ...` with its own genvision first on PYTHONPATH, in its own temp folder with a
fresh $GENVISION_CACHE, on the CPU: CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=MKL_NUM_THREADS=1, PYTHONHASHSEED=0):
a tiny GAN and VAE trained with FID every 15 steps and a learned-sigma VAE, `sample` in every mode, `fid` with every
metric, of reconstructions, of a PNG folder and real against real, `stats`, `evaluate-vae` and `report`. Every file
a command creates, changes or removes and every command's exit code, stdout and stderr get one SHA-256 digest each,
after this normalisation and nothing else:

- paths: the revision's temp folder and worktree become <WORK> and <TREE> in every text (stdout, stderr, JSON, HTML);
  tensorboard's folder and event-file names lose their time stamp, host name and process id;
- JSON, metrics.jsonl and safetensors headers: compared parsed (key order ignored), without the keys in TIME_KEYS
  (wall_time_s, img_per_s, seconds);
- grid sidecars (PNG.json): weights_sha256, when it is the SHA-256 of its checkpoint's weights.safetensors as that
  file is, becomes a note saying so (safetensors writes its metadata map in a random order, so the file's bytes and
  this hash vary between runs of the same code; that file's header and tensors have their own digest);
- .npz files: the arrays (name, dtype, shape, bytes), not the zip bytes (numpy stamps each member with the time);
- tensorboard event files: every event with its wall_time zeroed, without its TIME_KEYS scalars (img_per_s), its
  hparams plugin data re-serialised with a fixed map order (protobuf writes map entries in any order);
- report.html: the "report written" date, the "computed in N s" of the metrics table, the numbers of the wall-time
  and throughput rows and of the img_per_s row of the last logged step;
- stdout and stderr: tqdm's progress-bar frames (how many are drawn depends on the time; their losses are in
  metrics.jsonl) and the time and img/s figures of printed lines (TIME_PATTERNS).

PNG, state.pt and safetensors tensor data are compared byte for byte. It prints what differs (or "identical: N
outputs") and exits 1 on any difference; --json FILE writes each revision's digests and normalised texts.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAIN = ["--seed", "0", "--num-steps", "30", "--batch-size", "16", "--base-channels", "8", "--num-grid-images", "16",
         "--log-every", "5", "--sample-every", "15", "--checkpoint-every", "15"]
FID = ["--fid-every", "15", "--num-fid-samples", "200"]
REPORT = ["--num-samples", "200", "--bootstrap", "20", "--kid-subsets", "5", "--kid-subset-size", "100"]
COMMANDS: list[tuple[str, list[str]]] = [
    ("train-gan", ["train-gan", "--out-dir", "runs/gan", *TRAIN, *FID, "--latent-dim", "16"]),
    ("train-vae", ["train-vae", "--out-dir", "runs/vae", *TRAIN, *FID, "--latent-dim", "8", "--likelihood", "gaussian",
                   "--prior", "gmm", "--prior-components", "4", "--prior-fit-images", "500",
                   "--kl-warmup-steps", "20"]),
    ("train-vae-sigma", ["train-vae", "--out-dir", "runs/vae-sigma", *TRAIN, "--fid-every", "0", "--latent-dim", "8",
                         "--likelihood", "gaussian-learned", "--prior", "normal", "--kl-schedule", "constant"]),
    ("sample-grid", ["sample", "runs/gan", "--num", "16", "--grid", "out/gan-grid.png"]),
    ("sample-pngs-truncated", ["sample", "runs/gan", "--num", "64", "--truncation", "1.0",
                               "--out-dir", "out/gan-pngs"]),
    ("sample-interpolate", ["sample", "runs/gan", "--interpolate", "6", "--num", "4", "--grid", "out/gan-walk.png"]),
    ("sample-vae-gmm-grid", ["sample", "runs/vae", "--num", "16", "--grid", "out/vae-grid.png"]),
    ("sample-reconstruct", ["sample", "runs/vae", "--reconstruct", "mnist5k:test", "--num", "8",
                            "--grid", "out/vae-recon.png"]),
    ("fid-all-metrics", ["fid", "runs/gan", "mnist5k:test", "--num-samples", "200", "--json", "--kid",
                         "--kid-subsets", "10", "--kid-subset-size", "100", "--precision-recall",
                         "--classifier-scores"]),
    ("fid-reconstructions", ["fid", "runs/vae", "mnist5k:test", "--reconstructions", "mnist5k:test"]),
    ("fid-png-folder", ["fid", "out/gan-pngs", "mnist5k:test"]),
    ("fid-real-vs-real", ["fid", "mnist5k:train", "mnist5k:test", "--kid", "--kid-subsets", "10",
                          "--kid-subset-size", "100", "--precision-recall", "--classifier-scores"]),
    ("stats-generator", ["stats", "runs/vae-sigma", "--num-samples", "200", "--output", "out/vae-sigma-stats.npz"]),
    ("stats-dataset", ["stats", "mnist5k:test", "--output", "out/test-stats.npz"]),
    ("fid-npz", ["fid", "out/vae-sigma-stats.npz", "out/test-stats.npz"]),
    ("evaluate-vae", ["evaluate-vae", "runs/vae-sigma", "--num-importance-samples", "10"]),
    ("evaluate-vae-json", ["evaluate-vae", "runs/vae", "--num-importance-samples", "10", "--json"]),
    ("report-gan", ["report", "runs/gan", *REPORT]),
    ("report-vae", ["report", "runs/vae", *REPORT]),
]

TIME_KEYS = {"wall_time_s", "img_per_s", "seconds"}
TQDM_FRAME = re.compile(r"^.*\d+%\|.*\| *[\d.?]+[kMG]?/[\d.?]+[kMG]? \[.*\]$")
TIME_PATTERNS = [  # (pattern, replacement) on printed lines
    (re.compile(r"\b\d+(\.\d+)? ?(img/s|it/s|s/it)\b"), r"<N> \2"),
    (re.compile(r"\b(in|took|after) \d+(\.\d+)? ?(s|min|h)\b"), r"\1 <N> \3"),
    (re.compile(r"\b\d+:\d\d:\d\d\b"), "<H:MM:SS>"),
]
HTML_PATTERNS = [
    (re.compile(r"report written [^<]*"), "report written <date>"),
    (re.compile(r"computed in \d+(\.\d+)? s"), "computed in <N> s"),
    (re.compile(r"(<td>wall time</td><td class=num>)[^<]*(</td><td>seconds \()[^)]*\)"), r"\1<N>\2<H:MM:SS>)"),
    (re.compile(r"(<td>training throughput</td><td class=num>)[^<]*"), r"\1<N>"),
    (re.compile(r"(<td>(?:img_per_s|wall_time_s|seconds)</td><td class=num>)[^<]*"), r"\1<N>"),  # last logged step
]
TENSORBOARD_NAME = re.compile(r"events\.out\.tfevents\.\d+(\.\d+)?\.[^/]+\.\d+\.(\d+)$")
TENSORBOARD_FOLDER = re.compile(r"(^|/)tensorboard/\d+\.\d+/")


# ---------------------------------------------------------------------------------------------------------------
# Normalised digests.


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def drop_time_keys(value):
    if isinstance(value, dict):
        return {key: drop_time_keys(item) for key, item in value.items() if key not in TIME_KEYS}
    if isinstance(value, list):
        return [drop_time_keys(item) for item in value]
    return value


def canonical_json(value) -> str:
    return json.dumps(drop_time_keys(value), sort_keys=True)


def replace_paths(text: str, paths: dict[str, str]) -> str:
    for path, name in paths.items():
        text = text.replace(path, name)
    return text


def normalise_output(text: str, paths: dict[str, str]) -> str:
    """A command's stdout or stderr: paths replaced, tqdm frames dropped, time figures replaced."""
    lines = []
    for line in replace_paths(text, paths).splitlines():
        frames = [frame for frame in line.split("\r") if frame.strip() and not TQDM_FRAME.match(frame.strip())]
        for frame in frames:
            for pattern, replacement in TIME_PATTERNS:
                frame = pattern.sub(replacement, frame)
            lines.append(frame.rstrip())
    return "\n".join(lines)


def safetensors_digest(data: bytes) -> str:
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    header["__metadata__"] = drop_time_keys(header.get("__metadata__", {}))
    return sha(canonical_json(header) + sha(data[8 + size:]))


def npz_digest(path: Path) -> str:
    import numpy as np

    with np.load(path, allow_pickle=False) as arrays:
        return sha("".join(f"{name}:{arrays[name].dtype.str}:{arrays[name].shape}:{sha(arrays[name].tobytes())};"
                           for name in sorted(arrays.files)))


def tensorboard_digest(data: bytes) -> str:
    """TFRecord framing (length, crc, event, crc); each Event with wall_time = 0, without TIME_KEYS scalars, its
    hparams plugin data serialised in a fixed map order."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    parts, offset = [], 0
    while offset < len(data):
        length = struct.unpack("<Q", data[offset:offset + 8])[0]
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        event.wall_time = 0
        values = [value for value in event.summary.value if value.tag not in TIME_KEYS]
        for value in values:
            plugin = value.metadata.plugin_data
            if plugin.plugin_name == "hparams":
                plugin.content = plugin_data_pb2.HParamsPluginData.FromString(plugin.content).SerializeToString(
                    deterministic=True)
        if event.HasField("summary"):
            event.summary.ClearField("value")
            event.summary.value.extend(values)
        parts.append(sha(event.SerializeToString(deterministic=True)))
        offset += 12 + length + 4
    return sha("".join(parts))


def weights_hash_checked(value, work: Path):
    """A grid sidecar's weights_sha256 (the SHA-256 of its checkpoint's weights.safetensors file) replaced by a note
    that it is that file's hash (that file's tensors and metadata have their own digest): the file's bytes vary
    between runs because safetensors writes its metadata map in a random order."""
    if isinstance(value, dict) and "weights_sha256" in value and isinstance(value.get("checkpoint"), str):
        weights = work / value["checkpoint"].replace("<WORK>", str(work)) / "weights.safetensors"
        if weights.is_file() and hashlib.sha256(weights.read_bytes()).hexdigest() == value["weights_sha256"]:
            value = {**value, "weights_sha256": "<sha256 of the checkpoint's weights.safetensors>"}
    return value


def file_digest(path: Path, paths: dict[str, str], work: Path) -> str:
    data = path.read_bytes()
    name = path.name
    if name.endswith(".npz"):
        return npz_digest(path)
    if name.endswith(".safetensors"):
        return safetensors_digest(data)
    if name.startswith("events.out.tfevents."):
        return tensorboard_digest(data)
    if name.endswith((".json", ".jsonl", ".html", ".yml", ".yaml", ".txt", ".csv")):
        text = replace_paths(data.decode(), paths)
        if name.endswith(".json"):
            return sha(canonical_json(weights_hash_checked(json.loads(text), work)))
        if name.endswith(".jsonl"):
            return sha("\n".join(canonical_json(json.loads(line)) for line in text.splitlines() if line.strip()))
        if name.endswith(".html"):
            for pattern, replacement in HTML_PATTERNS:
                text = pattern.sub(replacement, text)
        return sha(text)
    return sha(data)  # PNG, state.pt and anything else: byte for byte


def normalised_name(relative: str) -> str:
    relative = TENSORBOARD_FOLDER.sub(r"\1tensorboard/<time>/", relative)
    return TENSORBOARD_NAME.sub(r"events.out.tfevents.<time>.<host>.<pid>.\2", relative)


def snapshot(work: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(work)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in work.rglob("*") if path.is_file()}


# ---------------------------------------------------------------------------------------------------------------
# One revision.


def digest_revision(tree: Path, work: Path) -> dict:
    """{"outputs": {name: digest}, "texts": {name: normalised stdout/stderr}, "seconds": wall s} of COMMANDS run by
    the genvision in `tree`, in the fresh folder `work`."""
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "GENVISION_CACHE": str(work / "cache"), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "TZ": "UTC"}
    imported = subprocess.run([sys.executable, "-c", "import genvision; print(genvision.__file__)"], cwd=work, env=env,
                              capture_output=True, text=True, check=True).stdout.strip()
    if not Path(imported).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"genvision of {tree} is not the one imported: {imported}")
    paths = {str(work.resolve()): "<WORK>", str(work): "<WORK>", str(tree.resolve()): "<TREE>", str(tree): "<TREE>"}
    (work / "out").mkdir()
    outputs, texts = {}, {}
    started = time.perf_counter()
    before = snapshot(work)
    for label, argv in COMMANDS:
        command_started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "genvision", *argv], cwd=work, env=env, capture_output=True,
                                text=True)
        print(f"  {label}: exit {result.returncode}, {time.perf_counter() - command_started:.1f} s", file=sys.stderr,
              flush=True)
        outputs[f"{label}: exit"] = str(result.returncode)
        for stream in ("stdout", "stderr"):
            texts[f"{label}: {stream}"] = normalise_output(getattr(result, stream), paths)
            outputs[f"{label}: {stream}"] = sha(texts[f"{label}: {stream}"])
        after = snapshot(work)
        for relative in sorted(set(before) | set(after)):
            if before.get(relative) == after.get(relative):
                continue
            key = f"{label}: {normalised_name(relative)}"
            while key in outputs:
                key += "'"
            outputs[key] = file_digest(work / relative, paths, work) if relative in after else "<removed>"
        before = after
    return {"outputs": outputs, "texts": texts, "seconds": round(time.perf_counter() - started, 1)}


def digest_revisions(revisions: dict[str, str], work: Path) -> dict[str, dict]:
    """{name: digest of that revision}; a revision '' is the working tree, one ending in .json a kept digest."""
    digests = {}
    for name, revision in revisions.items():
        if revision.endswith(".json") and Path(revision).is_file():
            digests[name] = json.loads(Path(revision).read_text())
            if "outputs" not in digests[name]:
                raise SystemExit(f"{revision}: not the digest of one revision (write one with --revision-only)")
            continue
        tree = ROOT
        if revision:
            tree = work / f"{name}-tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), revision],
                           check=True, capture_output=True)
        try:
            print(f"{name} ({revision or 'working tree'}):", file=sys.stderr, flush=True)
            digests[name] = {"revision": revision or "working tree", **digest_revision(tree, work / name)}
        finally:
            if tree != ROOT:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    return digests


def compare(base: dict, head: dict) -> int:
    """Print what differs between two digests; the number of differing outputs."""
    keys = list(dict.fromkeys([*base["outputs"], *head["outputs"]]))
    differing = [key for key in keys if base["outputs"].get(key) != head["outputs"].get(key)]
    if not differing:
        print(f"identical: {len(keys)} outputs")
        return 0
    print(f"{len(differing)} of {len(keys)} outputs differ (base {base['revision']}, head {head['revision']}):")
    width = max(len(key) for key in differing)
    print(f"{'output':<{width}}  {'base':<16}  {'head':<16}")
    for key in differing:
        print(f"{key:<{width}}  {base['outputs'].get(key, '<absent>'):<16}  {head['outputs'].get(key, '<absent>'):<16}")
    for key in differing:
        if key in base.get("texts", {}) and key in head.get("texts", {}):
            diff = difflib.unified_diff(base["texts"][key].splitlines(), head["texts"][key].splitlines(),
                                        f"base {key}", f"head {key}", lineterm="", n=1)
            print("\n".join(list(diff)[:40]))
    return len(differing)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", nargs="?", default="", help="git revision (or a --json digest file) to compare against")
    parser.add_argument("head", nargs="?", default="", help="git revision to check (default: the working tree)")
    parser.add_argument("--revision-only", default=None, metavar="REV",
                        help="digest this one revision ('' = the working tree) and compare nothing")
    parser.add_argument("--json", default="", metavar="FILE", help="write the digests (and normalised texts) here")
    parser.add_argument("--work-dir", default="", metavar="DIR",
                        help="run in this new folder and keep it (default: a temp folder, removed)")
    args = parser.parse_args()
    if args.revision_only is None and not args.base:
        parser.error("give BASE [HEAD], or --revision-only REV")
    revisions = {"revision": args.revision_only} if args.revision_only is not None else {"base": args.base,
                                                                                          "head": args.head}
    if args.work_dir:
        digests = digest_revisions(revisions, Path(args.work_dir).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="behaviour-digest-") as work:
            digests = digest_revisions(revisions, Path(work))
    for name, digest in digests.items():
        print(f"{name} ({digest['revision']}): {len(digest['outputs'])} outputs in {digest.get('seconds', '?')} s",
              file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(digests if len(digests) > 1 else next(iter(digests.values())),
                                              indent=1, sort_keys=True) + "\n")
    if args.revision_only is not None:
        return 0
    return 1 if compare(digests["base"], digests["head"]) else 0


if __name__ == "__main__":
    sys.exit(main())
