"""``storygraph report``: a PNG chart and an HTML page of a story's scores, scene by scene.

Identity across story time per character, one line per timeline (branch) it appears on: a branch's line starts
from the character's last point on the timeline it branches off, so alternatives read as a fork and never as one
zigzag through scenes that never happened together. Then the scene-level scores (text alignment, subject and
background consistency, transition smoothness), with a thumbnail of every generated scene.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..mediapaths import resolve

SCENE_SCORES = ("text_alignment", "subject_consistency", "background_consistency", "transition_smoothness")


def write_report(store, out_dir, title: str = "", note: str = "", story_dir=None) -> dict:
    """Write ``report.png`` and ``report.html`` to ``out_dir``; ``story_dir``: the folder the graph's media paths
    are relative to (default: the embedded store's own folder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    story_dir = story_dir if story_dir is not None else getattr(store, "path", None)
    out = Path(out_dir)
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    scenes = store.scenes()
    done = [s for s in scenes if s.status in ("done", "stale")]
    characters = store.characters()

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    series = identity_series(store, scenes, characters)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", ":", "-.")
    for ci, c in enumerate(characters):
        for bi, (branch, pts) in enumerate(series.get(c.id, {}).items()):
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colors[ci % len(colors)],
                     linestyle=styles[bi % len(styles)], label=c.name if bi == 0 else f"{c.name} ({branch})")
    ax1.set_ylabel("identity (DINOv2 cosine)")
    ax1.legend(loc="lower left", fontsize=8)
    ax1.grid(alpha=0.3)
    for name in SCENE_SCORES:
        pts = [(s.clock, getattr(s.scores, name)) for s in done if getattr(s.scores, name) is not None]
        if pts:
            ax2.plot(*zip(*pts), marker=".", label=name.replace("_", " "))
    ax2.set_xlabel("story clock")
    ax2.set_ylabel("score")
    ax2.legend(loc="lower left", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title or "storygraph report")
    fig.tight_layout()
    png = out / "report.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    rows = []
    for s in scenes:
        thumb = ""
        last = resolve(story_dir, s.last_frame_path)
        if last is not None and last.is_file():
            dest = thumbs / f"{s.id}.png"
            img = Image.open(last).convert("RGB")
            img.thumbnail((160, 160))
            img.save(dest)
            thumb = f'<img src="thumbs/{html.escape(dest.name)}" alt="">'
        cells = "".join(
            f"<td>{'' if getattr(s.scores, n) is None else f'{getattr(s.scores, n):.3f}'}</td>"
            for n in ("identity",) + SCENE_SCORES)
        rows.append(f"<tr><td>{thumb}</td><td>{html.escape(s.id)}</td><td>{s.clock:g}</td>"
                    f"<td>{html.escape(s.placement.branch)}</td><td>{html.escape(s.status)}</td>{cells}"
                    f"<td class=p>{html.escape(s.prompt or s.spec.action)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("", "scene", "clock", "branch", "status", "identity",
                                             *(n.replace("_", " ") for n in SCENE_SCORES), "prompt"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title or 'report')}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;vertical-align:top;font-size:13px}}td.p{{max-width:40em}}
.note{{background:#fff4d6;padding:.5em 1em;border-radius:4px}}</style></head><body>
<h1>{html.escape(title or 'storygraph report')}</h1>
{f'<p class="note">{html.escape(note)}</p>' if note else ''}
<p>{len(done)} of {len(scenes)} scenes generated.</p>
<img src="report.png" alt="identity and scores across story time" style="max-width:100%">
<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>"""
    page_path = out / "report.html"
    page_path.write_text(page, encoding="utf-8")
    return {"png": str(png), "html": str(page_path), "scenes": len(scenes), "done": len(done), "series": series}


def identity_series(store, scenes=None, characters=None) -> dict:
    """``{character id: {branch: [(clock, identity), ...]}}``: each character's accepted appearances, one line per
    branch in story order; a branch's line begins with the character's last point before the fork (on the
    timeline it branches from), when there is one."""
    scenes = scenes if scenes is not None else store.scenes()
    characters = characters if characters is not None else store.characters()
    by_id = {s.id: s for s in scenes}
    out: dict = {}
    for c in characters:
        apps = sorted(store.appearances(character_id=c.id, with_vectors=False),
                      key=lambda a: (a.clock, a.pos, a.frame_index))
        lines: dict = {}
        for a in apps:
            lines.setdefault(a.branch, []).append((float(a.clock), float(a.identity_score)))
        for branch, pts in lines.items():
            first = next((s for s in scenes if s.placement.branch == branch), None)
            if first is None or not first.placement.lineage:
                continue
            # the last point of this character on the timeline this branch forks from
            before = [(float(a.clock), float(a.identity_score)) for a in apps
                      if a.branch != branch and a.scene_id in by_id
                      and first.placement.has_ancestor(a.branch, a.pos)]
            if before:
                pts.insert(0, max(before))
        if lines:
            out[c.id] = lines
    return out
