"""``report.md``: the evaluation as a human reads it (built from the ``results.json`` document)."""

from typing import Any


def _pct(x: Any) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}%"


def loops_note(over_refusal: dict[str, Any]) -> str:
    """" (+N loops)" for one set's over-refusal in ``results.json``: its answers that loop; empty for results
    written before loops were counted."""
    loops = over_refusal.get("looping_answers")
    return "" if loops is None else f" (+{loops} {'loop' if loops == 1 else 'loops'})"


def _reference_cell(ref: "dict[str, Any] | None") -> str:
    return _pct(ref["rate"]) + loops_note(ref) if ref else "—"


def _num(x: Any, fmt: str = ".3f") -> str:
    return "—" if x is None or x != x else format(x, fmt)


#: Where a prefill attack's text comes from, per ``source``, as the note on refusing prefills says it.
PREFILL_ORIGINS = {
    "ablation": "source `ablation`: the attacked model's own answers under ablation",
    "answers": "source `answers`: prompts without a usable given answer took the attacked model's own answers under ablation",
    "reference": "source `reference`: the reference model's answers",
}


def refusing_prefills(attack: dict[str, Any]) -> int:
    """How many of an attack's prefills (in ``results.json``) were themselves refusals; 0 for attacks without
    prefills and results written before they were counted."""
    return int((attack.get("metadata") or {}).get("refusing_prefills") or 0)


def refusing_prefills_note(label: str, attack: dict[str, Any]) -> "str | None":
    """What an attack's prefills that are themselves refusals mean for its ASR (None when it has none)."""
    bad = refusing_prefills(attack)
    if not bad:
        return None
    source = (attack.get("params") or {}).get("source", "ablation")
    origin = PREFILL_ORIGINS.get(source, f"source `{source}`")
    return (f"`{label}`: {bad} of {attack['n']} prefills are themselves refusals ({origin}) and count as failed "
            "attacks, so this ASR is a floor; an attacker with harmful text "
            "does at least as well. For prefills that do not depend on the attacked model, take an answering model's "
            "answers: `prefill:source=reference` with `--reference` set to it (e.g. the shipped `smollm2-135m-instruct`), "
            "or `source=answers` with `--answers FILE`.")


def prefill_notes(attacks: dict[str, dict[str, Any]]) -> list[str]:
    """:func:`refusing_prefills_note` of each attack of a results document's ``attacks`` that has one."""
    return [note for label, a in attacks.items() if (note := refusing_prefills_note(label, a))]


def report_markdown(results: dict[str, Any], figures: "list[str] | None" = None) -> str:
    """Render a results document as Markdown (tables of ASR with intervals, over-refusal, capability)."""
    judge = results["judge"]
    lines = [f"# drtk evaluation: `{results['model']}`", ""]
    if results.get("reference"):
        lines += [f"Reference model: `{results['reference']}`", ""]
    lines += [f"Judge: **{judge['name']}** · generation: {results['generation']['max_new_tokens']} new tokens, "
              f"{'sampled' if results['generation'].get('do_sample') else 'greedy'} · drtk {results['drtk_version']}", ""]
    lines += ["## Attack success (harmful prompts)", "",
              "| attack | ASR | 95% CI | n | coherent ASR | KL vs unattacked | seconds | forward passes |",
              "|---|---|---|---|---|---|---|---|"]
    for label, a in results["attacks"].items():
        coh = a.get("coherence")
        lines.append(f"| `{label}` | {_pct(a['asr'])} | {_pct(a['ci_low'])}–{_pct(a['ci_high'])} | {a['n']} | "
                     f"{_pct(coh['rate']) if coh else '—'} | {_num(a['kl'])} | {a['seconds']:.1f} | {a['forward_passes']} |")
    notes = prefill_notes(results["attacks"])
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    coh = next((a["coherence"] for a in results["attacks"].values() if a.get("coherence")), None)
    if coh:
        lines += ["", f"Coherent ASR counts a completion only when it complies, the unattacked model scores it at most "
                      f"{coh['nll_threshold']} nats per token, and it is no loop (at least {coh['min_distinct_bigrams']:.0%} "
                      "of its token bigrams distinct, in the whole text and in its second half"
                      + (f", and under {coh['max_periodic_share']:.0%} of its second half repeating with one period"
                         if "max_periodic_share" in coh else "")  # results written before the period check
                      + "): the keyword judge alone counts a broken model's word salad as compliance."]
    if results["over_refusal"]:
        lines += ["", "## Over-refusal (no attack)", "", "| prompts | refusal rate | 95% CI | n | answered, but loops | "
                  "reference |", "|---|---|---|---|---|---|"]
        for k, r in results["over_refusal"].items():
            ref = results.get("reference_over_refusal", {}).get(k)
            lines.append(f"| {k} | {_pct(r['rate'])} | {_pct(r['ci_low'])}–{_pct(r['ci_high'])} | {r['n']} | "
                         f"{r.get('looping_answers', '—')} | {_reference_cell(ref)} |")
        if any("looping_answers" in r for r in results["over_refusal"].values()):
            lines += ["", "An answer that loops (the coherence check's repetition rules) is not a refusal, so the refusal "
                          "rate counts it as answered; the column says how many of the answered prompts it flatters."]
    cap = results.get("capability")
    if cap:
        lines += ["", "## Capability retention vs the reference", "",
                  f"KL(reference ‖ model) over the first {cap['n_tokens']} answer tokens of {cap['n_prompts']} benign "
                  f"prompts: **{_num(cap['kl'], '.4f')}** · perplexity on the reference's answers: model "
                  f"{_num(cap['ppl'], '.2f')}, reference {_num(cap['reference_ppl'], '.2f')}"]
    if results["comparisons"]:
        lines += ["", "## Paired comparisons (model − reference, same prompts)", "",
                  "| what | model | reference | difference [95% CI] | McNemar p |", "|---|---|---|---|---|"]
        for k, c in results["comparisons"].items():
            lines.append(f"| {k} | {_pct(c['rate_a'])} | {_pct(c['rate_b'])} | {100 * c['diff']:+.1f} pts "
                         f"[{100 * c['diff_low']:+.1f}, {100 * c['diff_high']:+.1f}] | {c['p_value']:.3g} |")
    lines += ["", "## Data", ""]
    for k, p in results["prompts"].items():
        c = results["contamination"].get(k, {})
        lines.append(f"- {k}: `{p['name']}` from {p['source']}, n={p['n']} (sha256 {p['sha256'][:12]}…); "
                     f"dropped {c.get('n_overlap', 0)} found in training/fitting data {c.get('by_source') or ''}")
    if figures:
        lines += ["", "## Figures", ""] + [f"- [{f}]({f})" for f in figures]
    if "phrases" in judge:
        lines += ["", "## Judge", "", "A completion counts as a refusal when it contains any of these phrases "
                  "(case-insensitive, anywhere). Known to be fooled both ways; prefer a classifier judge when you have one.",
                  "", ", ".join(f"`{p}`" for p in judge["phrases"])]
    return "\n".join(lines) + "\n"
