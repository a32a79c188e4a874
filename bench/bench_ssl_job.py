"""Peak memory and speed of the pipeline's SSL job (decode -> every hidden state -> a piece on disk)
on a long recording with a HuBERT-base-sized random-weight model.

    .venv/bin/python bench/bench_ssl_job.py --minutes 60 --mode strict

Runs `pipeline.features.jobs.run_ssl_job` exactly as a build worker does, with a plain forward of 30 s
of the same audio in the same process as the speed baseline, and prints the real-time factor,
the ratio, peak RSS (ru_maxrss of this process) and the bytes written per hour.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--mode", default="strict", choices=["none", "attention", "strict"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers import HubertConfig, HubertModel

    from pipeline.common.runtime import limit_threads
    from pipeline.features.jobs import run_ssl_job
    from schemas.conventions import HEAD_HOP_S

    limit_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lhg-ssl-job-"))
    torch.manual_seed(0)
    HubertModel(HubertConfig()).save_pretrained(work / "hubert-base-random")
    rng = np.random.default_rng(0)
    seconds = int(args.minutes * 60)
    audio = work / "long.wav"
    with sf.SoundFile(audio, "w", 16000, 1, "PCM_16") as f:  # written in blocks: bounded memory here too
        for _ in range(0, seconds, 60):
            f.write((0.1 * rng.standard_normal(16000 * 60)).astype(np.float32))
    model = HubertModel.from_pretrained(work / "hubert-base-random").eval()
    x = torch.from_numpy((0.1 * rng.standard_normal(16000 * 30)).astype(np.float32))[None]
    t = time.perf_counter()
    with torch.inference_mode():
        model(x, output_hidden_states=True)
    plain_rtf = (time.perf_counter() - t) / 30
    del model
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    job = {"session_id": "bench", "participant_id": "P", "audio": str(audio), "offset_s": 0.0,
           "model": "hubert-base-random", "model_dir": str(work / "hubert-base-random"), "model_tag": "bench",
           "out_table": str(work / "out.safetensors"), "out_record": str(work / "out.json"),
           "spans": [[0, int(seconds / HEAD_HOP_S)]],  # every frame kept: the worst case for memory
           "config": {"mode": args.mode, "window_s": 15.0, "chunk_s": 30.0, "context_s": 5.0, "layers": [],
                      "dtype": "float16", "device": "cpu"}}
    t = time.perf_counter()
    record = run_ssl_job(job)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = (work / "out.safetensors").stat().st_size
    print(f"{args.minutes:g} min of audio, mode {args.mode}, {args.threads} threads: record {record['status']}, "
          f"shape {record.get('shape')}")
    print(f"plain forward (30 s, same process): RTF {plain_rtf:.3f}")
    print(f"run_ssl_job: {elapsed:.0f} s, RTF {elapsed / seconds:.3f} = {elapsed / seconds / plain_rtf:.2f}x plain")
    print(f"peak RSS: {peak:.0f} MB (before the job: {rss_before:.0f} MB)")
    print(f"stored: {size / 1e6 / (seconds / 3600):.0f} MB per hour of audio (fp16, all hidden states)")


if __name__ == "__main__":
    main()
