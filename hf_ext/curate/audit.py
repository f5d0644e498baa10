"""Filter audits (AboutMe, arXiv 2401.06408): how a filter's retention differs across groups
of documents (topic, role, region, domain, language, ...), with bootstrap confidence
intervals, the most over/under-filtered groups, weighted log-odds lexical contrasts between
kept and dropped text, a bar plot and a dataset-card section.

>>> r = retention_by_group([True, True, False, False], ["a", "a", "b", "b"], n_boot=200)
>>> [(g["group"], g["retention"]) for g in r["groups"]]
[('a', 1.0), ('b', 0.0)]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .text import words as split_words
from .urls import url_domain


def retention_by_group(keep: Sequence[bool], groups: Sequence, n_boot: int = 2000, confidence: float = 0.95,
                       seed: int = 0, min_count: int = 1) -> dict:
    """Per-group retention with percentile bootstrap CIs, against the overall rate.

    The bootstrap resamples each group's documents with replacement: for a kept/dropped
    outcome that is a Binomial(n, p) draw, which is how it is computed. p is the group's rate
    smoothed by half a document each way, (k + 0.5) / (n + 1), so that a group kept or dropped
    entirely still gets an interval of non-zero width (the plain percentile bootstrap
    collapses to a point there and would flag every small all-kept group). A group is
    over-filtered when its whole CI lies below the overall retention, under-filtered when
    it lies above. Groups with fewer than ``min_count`` documents are left out.

    Args:
        keep (`Sequence[bool]`):
            Per document: whether the filter kept it.
        groups (`Sequence`):
            Per document: its group (any value; compared as ``str``); same length as `keep`.
        n_boot (`int`, *optional*, defaults to `2000`):
            Bootstrap resamples per group.
        confidence (`float`, *optional*, defaults to `0.95`):
            Coverage of the percentile intervals, in (0, 1).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the bootstrap's random generator.
        min_count (`int`, *optional*, defaults to `1`):
            Groups with fewer documents are left out of the report (they still count in the overall rate).
    """
    keep = np.asarray(keep, dtype=bool)
    if len(keep) != len(groups):
        raise InputError(f"keep has {len(keep)} values but groups has {len(groups)}.")
    if len(keep) == 0:
        raise InputError("Cannot audit an empty dataset: no documents to compute retention on.")
    if not 0 < confidence < 1:
        raise InputError(f"confidence must be in (0, 1), got {confidence}.")
    rng = np.random.default_rng(seed)
    overall = float(keep.mean())
    labels = np.asarray([str(g) for g in groups])
    lo_q, hi_q = (1 - confidence) / 2, 1 - (1 - confidence) / 2
    rows = []
    for group in sorted(set(labels.tolist())):
        k = keep[labels == group]
        n = len(k)
        if n < min_count:
            continue
        p = float(k.mean())
        boot = rng.binomial(n, (k.sum() + 0.5) / (n + 1), size=n_boot) / n
        lo, hi = (float(x) for x in np.quantile(boot, [lo_q, hi_q]))
        rows.append({
            "group": group, "n": n, "kept": int(k.sum()), "retention": p, "ci_low": lo, "ci_high": hi,
            "vs_overall": p - overall, "over_filtered": hi < overall, "under_filtered": lo > overall,
        })
    ranked = sorted(rows, key=lambda r: r["vs_overall"])
    return {
        "overall": overall, "n": int(len(keep)), "confidence": confidence, "groups": rows,
        "most_over_filtered": [r["group"] for r in ranked if r["over_filtered"]][:10],
        "most_under_filtered": [r["group"] for r in reversed(ranked) if r["under_filtered"]][:10],
    }


def weighted_log_odds(kept_texts: Sequence[str], dropped_texts: Sequence[str], top_k: int = 20, prior_scale: float = 0.01,
                      min_count: int = 3) -> dict[str, list[tuple[str, float]]]:
    """Words most associated with kept vs dropped documents: log-odds ratios with an
    informative Dirichlet prior (the pooled counts), z-scored by their variance (Monroe,
    Colaresi & Quinn 2008, as AboutMe uses). Positive z = typical of kept text.

    Args:
        kept_texts (`Sequence[str]`):
            Texts of the kept documents.
        dropped_texts (`Sequence[str]`):
            Texts of the dropped documents.
        top_k (`int`, *optional*, defaults to `20`):
            Words returned for each side (``"kept"`` and ``"dropped"``).
        prior_scale (`float`, *optional*, defaults to `0.01`):
            Size of the Dirichlet prior as a fraction of the pooled word count, spread over the words in proportion
            to their pooled counts.
        min_count (`int`, *optional*, defaults to `3`):
            Words seen fewer times in both sides together are left out (as are all-digit words).
    """
    kept = Counter(w.lower() for t in kept_texts for w in split_words(t or ""))
    dropped = Counter(w.lower() for t in dropped_texts for w in split_words(t or ""))
    pooled = kept + dropped
    vocab = [w for w, c in pooled.items() if c >= min_count and not w.isdigit()]
    if not vocab or not kept or not dropped:
        return {"kept": [], "dropped": []}
    a0 = prior_scale * sum(pooled[w] for w in vocab)
    total_pooled = sum(pooled[w] for w in vocab)
    n_k, n_d = sum(kept[w] for w in vocab), sum(dropped[w] for w in vocab)
    scores = []
    for w in vocab:
        alpha = a0 * pooled[w] / total_pooled
        yk, yd = kept[w], dropped[w]
        delta = math.log((yk + alpha) / (n_k + a0 - yk - alpha)) - math.log((yd + alpha) / (n_d + a0 - yd - alpha))
        scores.append((w, delta / math.sqrt(1 / (yk + alpha) + 1 / (yd + alpha))))
    scores.sort(key=lambda x: x[1])
    return {"kept": [(w, round(z, 3)) for w, z in reversed(scores[-top_k:])], "dropped": [(w, round(z, 3)) for w, z in scores[:top_k]]}


# -- groups derived from URLs --------------------------------------------------------------

_SITE_TYPES = (
    ("edu", re.compile(r"\.edu(\.|$)|\.ac\.[a-z]{2}$|universit|college|school")),
    ("gov", re.compile(r"\.gov(\.|$)|\.mil$|government")),
    ("wiki_reference", re.compile(r"wiki|dictionary|encyclop|britannica")),
    ("forum_qa", re.compile(r"forum|community|reddit|stackexchange|stackoverflow|quora|answers|board")),
    ("blog", re.compile(r"blog|wordpress|medium\.com|tumblr|substack|typepad")),
    ("news", re.compile(r"news|times|post|herald|tribune|daily|journal|gazette|reuters|bbc|cnn")),
    ("shop", re.compile(r"shop|store|product|cart|buy|deal|amazon|ebay|etsy|price")),
)


def url_tld(url: str) -> str:
    """Top-level domain of a URL ("com", "uk", ...; "" when unparsable).

    Args:
        url (`str`):
            The URL (a scheme is optional).
    """
    host = url_domain(url)
    return host.rsplit(".", 1)[-1] if "." in host else ""


def url_site_type(url: str) -> str:
    """A coarse site type from the URL's host and path: edu, gov, wiki_reference, forum_qa,
    blog, news, shop or other (first matching rule).

    Args:
        url (`str`):
            The URL; its host is matched for every type, its path also for blog, shop and forum_qa.
    """
    host = url_domain(url)
    path = url.split(host, 1)[-1].lower() if host else url.lower()
    for name, pattern in _SITE_TYPES:
        if pattern.search(host) or (name in ("blog", "shop", "forum_qa") and pattern.search(path)):
            return name
    return "other"


GROUP_DERIVERS = {"url_tld": url_tld, "url_site_type": url_site_type}


def plot_retention(report: dict, path: str | Path, title: str = "Retention by group") -> str:
    """Horizontal bars of per-group retention with CI whiskers and the overall rate.

    Args:
        report (`dict`):
            A `retention_by_group` result; over-filtered groups are drawn red, under-filtered green.
        path (`str` or `Path`):
            Image file written (format from its suffix); returned as a string.
        title (`str`, *optional*, defaults to `"Retention by group"`):
            Title of the plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["groups"], key=lambda r: r["retention"])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ret = np.array([r["retention"] for r in rows])
    err = np.array([[r["retention"] - r["ci_low"] for r in rows], [r["ci_high"] - r["retention"] for r in rows]])
    colors = ["#d62728" if r["over_filtered"] else "#2ca02c" if r["under_filtered"] else "#7f7f7f" for r in rows]
    ax.barh(y, ret, xerr=err, color=colors, capsize=2)
    ax.axvline(report["overall"], color="black", linestyle="--", label=f"overall {report['overall']:.2f}")
    ax.set_yticks(y, [f"{r['group']} (n={r['n']})" for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"retention ({int(report['confidence'] * 100)}% bootstrap CI)")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def card_section(filter_name: str, group_name: str, report: dict, contrasts: dict | None = None, plot_file: str | None = None) -> dict:
    """A dataset-card section (title + markdown body) for one filter x grouping.

    Args:
        filter_name (`str`):
            Name of the audited filter, shown in the title and text.
        group_name (`str`):
            Name of the grouping (e.g. ``url_site_type``), shown in the title and text.
        report (`dict`):
            A `retention_by_group` result, tabled by group.
        contrasts (`dict` or `None`, *optional*, defaults to `None`):
            A `weighted_log_odds` result; its first 12 kept and dropped words are listed when given.
        plot_file (`str` or `None`, *optional*, defaults to `None`):
            Path of a `plot_retention` image (relative to the card) embedded when given.
    """
    lines = [
        f"Filter `{filter_name}` keeps {report['overall']:.1%} of {report['n']} documents overall. "
        f"Retention by `{group_name}` with {int(report['confidence'] * 100)}% bootstrap intervals "
        "(▼ over-filtered: the interval lies below the overall rate; ▲ under-filtered):",
        "",
        "| group | n | retention | CI | vs overall |",
        "|---|---:|---:|---|---:|",
    ]
    for r in sorted(report["groups"], key=lambda r: r["vs_overall"]):
        mark = " ▼" if r["over_filtered"] else " ▲" if r["under_filtered"] else ""
        lines.append(f"| {r['group']}{mark} | {r['n']} | {r['retention']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['vs_overall']:+.3f} |")
    if plot_file:
        lines += ["", f"![retention by {group_name}]({plot_file})"]
    if contrasts and (contrasts["kept"] or contrasts["dropped"]):
        lines += ["", "Words typical of kept vs dropped text (weighted log-odds z-scores):", "",
                  "- kept: " + ", ".join(f"{w} ({z:+.1f})" for w, z in contrasts["kept"][:12]),
                  "- dropped: " + ", ".join(f"{w} ({z:+.1f})" for w, z in contrasts["dropped"][:12])]
    return {"title": f"Audit: {filter_name} by {group_name}", "body": "\n".join(lines)}
