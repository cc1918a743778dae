"""Measure GGUF exports of one model against transformers and llama.cpp: the numbers of README "Run it locally".

    .venv/bin/python scripts/gguf_agreement.py                       # SmolLM2-135M, every type, 8 problems
    .venv/bin/python scripts/gguf_agreement.py --model runs/cpu_s0/final_model --types f16 q8_0 --problems 16
    .venv/bin/python scripts/gguf_agreement.py --q4-logits q4_0      # Q4_0 with the logits matrix at Q4_0 too

Per output type: export seconds and file size; max |logit| difference, file read back by transformers vs the
original folder (float32), on a training-format prompt; max |log-prob| difference, llama.cpp vs transformers on
the same file, over llama.cpp's own greedy tokens; and greedy replies from llama.cpp (the file, its chat
template) vs transformers (the original folder, apply_chat_template) on two-term sums in the CPU default run's
format: how many replies are identical, and how many answers are right in each. Writes a JSON file too.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

SYSTEM = "Give the answer inside <answer></answer> tags."
FEWSHOT = [("What is 12 + 9?", "12 + 9 = 21 <answer>21</answer>")]


def messages(a: int, b: int) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": SYSTEM}]
    for user, assistant in FEWSHOT:
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return [*turns, {"role": "user", "content": f"What is {a} + {b}?"}]


def correct(text: str, a: int, b: int) -> bool:
    found = re.findall(r"<answer>\s*(-?\d+)\s*</answer>", text)
    return bool(found) and int(found[-1]) == a + b


def measure_type(folder: Path, out_type: str, out_dir: Path, model: Any, tok: Any, problems: list[tuple[int, int]],
                 hf_replies: list[str], max_new: int) -> dict[str, Any]:  # fmt: skip
    import torch

    from r1zero.export import export_gguf, llamacpp

    result = export_gguf(folder, out_dir / f"model-{out_type}.gguf", out_type)
    back = model.__class__.from_pretrained(out_dir, gguf_file=result.path.name, dtype=torch.float32).eval()
    probe = tok.apply_chat_template(messages(41, 27), add_generation_prompt=True, return_dict=True)[
        "input_ids"
    ]
    with torch.no_grad():
        ref_logits, file_logits = model(torch.tensor([probe])).logits, back(torch.tensor([probe])).logits
    server = llamacpp.load(result.path, threads=2)
    cpp_replies, logprob_gap = [], 0.0
    for a, b in problems:
        reply = llamacpp.chat(server, messages(a, b), max_new)
        cpp_replies.append(reply.text)
        ids = tok.apply_chat_template(messages(a, b), add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        cont = llamacpp.complete(server, list(ids), max_new)  # token ids: teacher-force transformers on them
        with torch.no_grad():
            logp = torch.log_softmax(back(torch.tensor([list(ids) + cont.token_ids])).logits[0].double(), -1)
        chosen = logp[len(ids) - 1 : -1][torch.arange(len(cont.token_ids)), cont.token_ids]
        logprob_gap = max(
            logprob_gap, float((chosen - torch.tensor(cont.logprobs, dtype=torch.float64)).abs().max())
        )
    return {
        "type": out_type, "seconds": round(result.seconds, 2), "megabytes": round(result.nbytes / 1e6, 1),
        "tensor_types": result.tensor_types,
        "max_abs_logit_diff_transformers": float((file_logits - ref_logits).abs().max()),
        "max_abs_logprob_diff_llamacpp_vs_transformers_same_file": logprob_gap,
        "replies_identical_to_transformers_folder": sum(x == y for x, y in zip(cpp_replies, hf_replies)),
        "correct_llamacpp": sum(correct(t, a, b) for t, (a, b) in zip(cpp_replies, problems)),
        "replies": cpp_replies,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="preset name or model folder")
    parser.add_argument("--types", nargs="+", default=["f32", "f16", "bf16", "q8_0", "q4_0"])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-new", type=int, default=32)
    parser.add_argument("--q4-logits", default=None, help="storage type of the logits matrix in q4_0 files")
    parser.add_argument("--json", default="gguf_agreement.json")
    args = parser.parse_args()
    from r1zero.env import setup_environment

    setup_environment()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1zero.export import tensors
    from r1zero.models import resolve_model

    if args.q4_logits:
        tensors.Q4_0_LOGITS_TYPE = args.q4_logits.upper()
    folder = Path(resolve_model(args.model))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rng = random.Random(1234)
    problems = [(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(args.problems)]
    hf_replies = []
    for a, b in problems:
        ids = tok.apply_chat_template(messages(a, b), add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        out = model.generate(torch.tensor([list(ids)]), max_new_tokens=args.max_new, do_sample=False)
        hf_replies.append(tok.decode(out[0, len(ids) :], skip_special_tokens=True))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for out_type in args.types:
            rows.append(
                measure_type(folder, out_type, Path(tmp), model, tok, problems, hf_replies, args.max_new)
            )
            r = rows[-1]
            print(f"{out_type:5s} {r['seconds']:6.1f} s {r['megabytes']:7.1f} MB  logit {r['max_abs_logit_diff_transformers']:.4f}"
                  f"  logprob(cpp vs hf) {r['max_abs_logprob_diff_llamacpp_vs_transformers_same_file']:.4f}"
                  f"  identical {r['replies_identical_to_transformers_folder']}/{len(problems)}"
                  f"  correct {r['correct_llamacpp']}/{len(problems)}", file=sys.stderr, flush=True)  # fmt: skip
    report = {
        "model": str(folder), "problems": problems, "transformers_replies": hf_replies,
        "transformers_correct": sum(correct(t, a, b) for t, (a, b) in zip(hf_replies, problems)), "types": rows,
    }  # fmt: skip
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "types"} | {"types": [
        {k: v for k, v in r.items() if k != "replies"} for r in rows]}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
