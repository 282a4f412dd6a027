"""A process killed (SIGKILL) after the graph commit and before the vector index is saved loses nothing.

The child process commits scenes to a real LadybugDB graph, saves the vector indexes, then commits more: new
appearances, and a different take chosen for an earlier scene (so some indexed appearances stop being
accepted). It records the retrieval answers an up-to-date index gives, and is killed by the crash point
``after_commit`` before its index is updated or saved. On reopen, the saved index is the stale one; after
reconcile it holds exactly the graph's accepted appearances and answers as the child did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from storygraph.engine.retrieval import Retriever
from storygraph.engine.vectors import VectorIndex
from storygraph.domain import MemoryParams

from support import embedded_store

TESTS = Path(__file__).resolve().parent

# run with ``python -c`` from the tests folder, so ``support`` is importable as it is here
CHILD = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from support import Planted, commit, embedded_store, make_appearance, memory_story
    from storygraph.domain import Character, MemoryParams, Transition
    from storygraph.engine.retrieval import Retriever
    from storygraph.engine.vectors import VectorIndex
    from storygraph.faults import crash_point

    folder = Path(sys.argv[1])
    planted = Planted(7)
    envs = {"s0": "pier", "s1": "lighthouse", "s2": "market", "s3": "pier", "x2": "cabin"}
    scenes = [(s, e, ("mara", "ivo")) for s, e in envs.items()]
    st = memory_story(scenes, [Transition("s0", "s1", "cut"), Transition("s1", "s2", "cut"), Transition("s2", "s3", "cut"),
                        Transition("s1", "x2", "cut")],
               (Character("mara", "Mara"), Character("ivo", "Ivo")))
    store = embedded_store(folder / "story")
    store.load_story(st)

    def take(sid, n):
        return [make_appearance(store, f"{sid}-{c}-t{n}", c, sid, planted.dino(c, outfit=f"{sid}{n}"),
                                planted.clip(c, envs[sid]), take=n) for c in ("mara", "ivo")]

    indexes = {s: VectorIndex.open(folder / "vectors", s) for s in ("clip", "dino")}
    for sid in ("s0", "s1", "x2"):
        apps = take(sid, 0)
        commit(store, sid, apps, take=0)
        for idx in indexes.values():
            idx.add(apps)
            idx.save()

    # more graph commits; the index is not told
    commit(store, "s2", take("s2", 0), take=0)
    commit(store, "s1", take("s1", 1), take=1, choose=True)  # s1 take 0 no longer continues the timeline

    # what an up-to-date index answers, built from the graph in memory only
    fresh = {s: VectorIndex(s) for s in ("clip", "dino")}
    for idx in fresh.values():
        idx.reconcile(store)
    r = Retriever(store, fresh["clip"], fresh["dino"], MemoryParams())
    answers = {}
    for sid in ("s3", "x2"):
        for c in ("mara", "ivo"):
            for env in ("pier", "lighthouse", "market"):
                got = r.nearest_prior_appearances(store.scene(sid), c, 5, text_query=planted.text(c, env))
                answers[f"{sid}/{c}/{env}"] = [[x.appearance.id, round(x.score, 6)] for x in got]
    with open(folder / "answers.json", "w") as f:
        json.dump({"answers": answers, "queries": {c: {e: planted.text(c, e).tolist() for e in
                   ("pier", "lighthouse", "market")} for c in ("mara", "ivo")}}, f)
        f.flush()
        os.fsync(f.fileno())

    crash_point("after_commit")
    for idx in indexes.values():  # never reached: killed above
        idx.reconcile(store)
        idx.save()
    print("not killed")
''')


def test_sigkill_between_graph_commit_and_index_save(tmp_path):
    env = dict(os.environ, STORYGRAPH_CRASH_AT="after_commit")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, cwd=TESTS,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "not killed" not in proc.stdout
    recorded = json.loads((tmp_path / "answers.json").read_text())

    store = embedded_store(tmp_path / "story")
    try:
        graph = dict(store.appearance_keys())
        assert {"s2-mara-t0", "s1-mara-t1"} <= set(graph) and "s1-mara-t0" not in graph
        indexes = {s: VectorIndex.open(tmp_path / "vectors", s) for s in ("clip", "dino")}
        for idx in indexes.values():
            # the saved index is the one from before the last commits: stale
            assert "s2-mara-t0" not in idx and "s1-mara-t1" not in idx and "s1-mara-t0" in idx
            got = idx.reconcile(store)
            assert got["added"] == 4 and got["removed"] == 2
            assert {i: idx.character_of(i) for i in idx.ids()} == graph
        r = Retriever(store, indexes["clip"], indexes["dino"], MemoryParams())
        answers = {}
        for key in recorded["answers"]:
            sid, c, env = key.split("/")
            got = r.nearest_prior_appearances(store.scene(sid), c, 5, text_query=recorded["queries"][c][env])
            answers[key] = [[x.appearance.id, round(x.score, 6)] for x in got]
        assert answers == recorded["answers"]
        assert answers["s3/mara/lighthouse"][0][0] == "s1-mara-t1"  # the newly chosen take is the memory now
        # saved after reconcile, the index reopens complete without touching the graph
        for idx in indexes.values():
            idx.save()
        again = VectorIndex.open(tmp_path / "vectors", "clip")
        assert again.ids() == set(graph)
    finally:
        store.close()
