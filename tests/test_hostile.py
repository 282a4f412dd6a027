"""Hostile story files (tests/data/bad/hostile_*.yaml): each one is refused by ``storygraph load`` as a user runs
it, with exit 2 and ``file:line: field:`` on one line, writes nothing, and costs under 2 s of CPU and 200 MB.

The classes: YAML dates and explicit tags, numbers too long or out of range, control characters and encodings,
alias and merge-key bombs, undefined and self-referencing aliases, deep nesting, text and lists too long,
references that are not image files in the story's folder tree (system files, devices, ``..``, a symlink out,
a text file named .png, a truncated PNG, a GIF, a pixel bomb, a 300-character name, a folder), ids that clash
ignoring case or hide a look-alike letter, transitions that merge or loop, keys that are not words, a second
document. Each child process is measured on its own (``os.wait4``): CPU time, not wall time, so a loaded
machine cannot fail the limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storygraph.storyfile import StoryFileError, load_story

ROOT = Path(__file__).resolve().parent.parent
BAD = Path(__file__).resolve().parent / "data" / "bad"
CPU_LIMIT_S = 2.0
RSS_LIMIT_MB = 200

# file (tests/data/bad/hostile_<name>.yaml), line, field ("" for a problem of the whole file), a fragment of the
# message. Every file opens with one comment line saying what it tries; the story starts on line 2.
HOSTILE = [
    # YAML dates: never built, refused where a string, an id or a number goes
    ("date_title", 2, "story.title", "got a date (2024-13-45); put it in quotes"),
    ("date_key", 8, "scenes[0].2024-02-30", "a key must be a word, got a date"),
    ("date_id", 8, "scenes[0].id", "got a date (2024-01-01)"),
    ("date_frames", 8, "scenes[0].frames", "got a date (2024-01-01)"),
    # explicit tags: none but !!str
    ("tag_int_text", 8, "scenes[0].frames", "unsupported YAML tag '!!int'"),
    ("tag_int_empty", 8, "scenes[0].seed", "unsupported YAML tag '!!int'"),
    ("tag_float_text", 8, "scenes[0].fps", "unsupported YAML tag '!!float'"),
    ("tag_bool_maybe", 8, "scenes[0].action", "unsupported YAML tag '!!bool'"),
    ("tag_timestamp", 8, "scenes[0].title", "unsupported YAML tag '!!timestamp'"),
    ("tag_binary", 4, "characters[0].description", "unsupported YAML tag '!!binary'"),
    ("tag_set", 8, "scenes[0].characters", "unsupported YAML tag '!!set'"),
    ("tag_custom", 8, "scenes[0].action", "unsupported YAML tag '!shell'"),
    ("tag_python_name", 8, "scenes[0].camera", "unsupported YAML tag '!!python/name:os.system'"),
    ("tag_on_key", 8, "scenes[0]", "unsupported YAML tag '!!python/object/apply:os.system'"),
    # numbers: too long to convert, out of range, not finite
    ("digits_int", 8, "scenes[0].seed", "a number written with 5000 characters"),
    ("digits_float", 8, "scenes[0].guidance", "a number written with 402 characters"),
    ("float_overflow", 11, "transitions[0].gap", "inf is not a finite number"),
    ("gap_huge", 12, "transitions[0].gap", "1e+308 is out of range"),
    ("frames_huge", 8, "scenes[0].frames", "1000000001 is not allowed"),
    ("seed_2_64", 8, "scenes[0].seed", "18446744073709551616 is not allowed"),
    ("fps_huge", 8, "scenes[0].fps", "1e+300 is out of range"),
    ("steps_zero", 8, "scenes[0].steps", "0 is not allowed"),
    ("guidance_negative", 8, "scenes[0].guidance", "-1.5 is out of range"),
    ("width_hex", 8, "scenes[0].width", "16777215 is not allowed"),
    ("decay_tau_zero", 4, "characters[0].decay_tau", "0 is out of range"),
    ("decay_tau_huge", 4, "characters[0].decay_tau", "1e+30 is out of range"),
    ("reference_frame_huge", 8, "scenes[0].references[0].frame_index", "5000 is not allowed"),
    # control characters and encodings
    ("nul_byte", 8, "scenes[0].action", "a control character U+0000"),
    ("escape_byte", 4, "characters[0]", "a control character U+001B"),
    ("bell_in_key", 8, "scenes[0].act ion2", "a control character U+0007"),
    ("utf16", 1, "", "not UTF-8 text (byte 0xff at offset 0)"),
    # aliases and merge keys
    ("merge_bomb", 35, "environments[31].sneaky", "unknown key 'sneaky'"),
    ("merge_wide", 14, "environments[10]", "the file expands to more than"),
    ("alias_laughs", 69, "scenes[3242].characters[54]", "the file expands to more than"),
    ("alias_references", 69, "scenes[1376].references[11].path", "the file expands to more than"),
    ("alias_undefined", 9, "scenes[2]", "found undefined alias 'nothing'"),
    ("alias_self", 9, "scenes[1]", "found undefined alias 'me'"),
    ("merge_not_mapping", 9, "scenes[1].<<", "bad merge key"),
    ("nesting_deep", 8, "scenes[0].title" + "[0]" * 30, "nesting deeper than 32 levels"),
    ("second_document", 12, "", "expected a single document in the stream"),
    # sizes of text and lists
    ("action_huge", 8, "scenes[0].action", "20004 characters, more than 10000"),
    ("name_huge", 4, "characters[0].name", "300 characters, more than 200"),
    ("key_huge", 8, "scenes[0]", "invalid YAML"),
    ("cast_huge", 107, "scenes[0].characters", "100 characters, more than 64"),
    ("references_many", 8, "scenes[0].references", "20 references, more than 16"),
    # references: image files inside the story file's folder tree only
    ("ref_etc_passwd", 4, "characters[0].reference", "/etc/passwd is outside the folders reference images may come"),
    ("ref_proc_environ", 4, "characters[0].reference", "/proc/self/environ (it leads to /proc/"),
    ("ref_dotdot", 4, "characters[0].reference", "/etc/hosts is outside the folders"),
    ("ref_dev_zero", 8, "scenes[0].references[0].path", "/dev/zero is outside the folders"),
    ("ref_symlink_out", 4, "characters[0].reference", "(it leads to /etc/passwd) is outside the folders"),
    ("ref_not_image", 4, "characters[0].reference", "not an image"),
    ("ref_truncated", 4, "characters[0].reference", "a broken image"),
    ("ref_gif", 4, "characters[0].reference", "a GIF image, not one of PNG, JPEG, WEBP"),
    ("ref_pixel_bomb", 4, "characters[0].reference", "more than 64000000 pixels"),
    ("ref_name_too_long", 4, "characters[0].reference", "File name too long"),
    ("ref_folder", 4, "characters[0].reference", "not a file"),
    # ids, links and timelines
    ("id_case_clash", 9, "scenes[1].id", "duplicate id 'MARA': already used by character 'mara' at line 4"),
    ("id_unicode_lookalike", 8, "scenes[0].id", "invalid id"),
    ("unknown_environment_bad_id", 8, "scenes[0].environment", "invalid id '../../etc'"),
    ("transition_two_parents", 13, "transitions[1]", "scene 's3' already has an incoming transition (from 's1'"),
    ("cycle_long", 1004, "transitions[499]", "transitions form a cycle: c0 -> c1 -> c2"),
    # keys that are not words
    ("key_null", 8, "scenes[0].~", "a key must be a word, got null"),
    ("key_bool", 8, "scenes[0].yes", "a key must be a word, got a boolean (true)"),
    ("key_complex", 8, "scenes[0].?", "a key must be a word, got a list"),
]


def test_every_hostile_file_is_in_the_table():
    on_disk = {p.stem[len("hostile_"):] for p in BAD.glob("hostile_*.yaml")}
    assert on_disk == {name for name, *_ in HOSTILE}
    assert len(on_disk) >= 40


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def bad_before():
    return _tree(BAD)


# The CLI, reporting its own peak resident set at exit: the kernel's ru_maxrss of a child counts the parent's size
# at fork, VmHWM belongs to the process's own memory since exec.
_RUNNER = """
import atexit, sys
def peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    sys.stderr.write(f"\\n@peak_kb {kb}\\n")
atexit.register(peak)
sys.argv = ["storygraph", *sys.argv[1:]]
from storygraph.cli import main
main()
"""


def _run(args: list, cwd: Path) -> tuple[int, str, str, float, float]:
    """Run the CLI in a fresh interpreter: exit code, stdout, stderr, CPU seconds, peak RSS in MB (this child's)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    p = subprocess.Popen([sys.executable, "-c", _RUNNER, *map(str, args)], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()  # a line or two each: no pipe fills up
    p.stdout.close()
    p.stderr.close()
    _, status, usage = os.wait4(p.pid, 0)  # this child's CPU time (its own, not the parent's)
    p.returncode = os.waitstatus_to_exitcode(status)
    lines = err.rstrip().splitlines()
    assert lines and lines[-1].startswith("@peak_kb "), err
    return p.returncode, out, "\n".join(lines[:-1]), usage.ru_utime + usage.ru_stime, int(lines[-1].split()[1]) / 1024


@pytest.mark.parametrize("name,line,field,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_is_refused_cheaply_and_writes_nothing(name, line, field, fragment, tmp_path, bad_before):
    path = BAD / f"hostile_{name}.yaml"
    story_dir = tmp_path / "story"
    code, out, err, cpu_s, rss_mb = _run(["load", path, "--dir", story_dir], tmp_path)
    assert code == 2, (code, out, err)
    where = f"{path}:{line}: {field}: " if field else f"{path}:{line}: "
    lines = err.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and fragment in lines[0], err
    assert "Traceback" not in err
    assert not story_dir.exists() and list(tmp_path.iterdir()) == []
    assert _tree(BAD) == bad_before
    assert cpu_s < CPU_LIMIT_S, f"{cpu_s:.2f} s of CPU"
    assert rss_mb < RSS_LIMIT_MB, f"{rss_mb:.0f} MB"


@pytest.mark.parametrize("name,line,field,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_error_in_process(name, line, field, fragment):
    """The same answer from the Python API, with every part of the error filled in."""
    with pytest.raises(StoryFileError) as info:
        load_story(BAD / f"hostile_{name}.yaml")
    e = info.value
    assert (e.line, e.field) == (line, field), str(e)
    assert fragment in e.message and e.expected and e.column, str(e)
