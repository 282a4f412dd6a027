"""The ``storygraph`` command line (click + rich). Heavy modules are imported inside the commands."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from . import __version__

from .errors import InvalidInput, NotFound, Refused, StorygraphError

# the exit codes of the error kinds (storygraph.errors), for the places that name one
EXIT_FAILED = 1
EXIT_BAD_INPUT = InvalidInput.exit_code
EXIT_REFUSED = Refused.exit_code

GRAPH_HELP = ("where the story's graph lives when not in the story folder: neo4j://host:7687 (also bolt://, "
              "neo4j+s://)")
DIR_HELP = "story folder: the embedded graph, media, vector index and storygraph.toml"


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:  # piped: wide enough that tables keep their ids whole
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=200)
    return console


def _report(label: str, message: str) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]{escape(label)}[/] {escape(message)}", markup=True, highlight=False)


def _fail(message: str, code: int = EXIT_FAILED):
    _report("error:", message)
    sys.exit(code)


def _load_story(path: str, story_dir=None):
    """The story file, its reference images allowed from the story folder's ``[story] reference_folders``."""
    from .storyfile import load_story

    roots = ()
    if story_dir is not None and Path(story_dir).is_dir():
        from .config import Config

        roots = Config.load(story_dir).story.reference_roots(story_dir)
    return load_story(path, reference_folders=roots)


def _open_store(graph: str, story: str | None, database: str | None, create: bool = True):
    from .graphdb import open_store

    return open_store(graph, story, database=database, create=create)


class _Storygraph(click.Group):
    """The command group, and the one place where errors become exit codes: a :class:`StorygraphError` prints
    one line (no traceback) and exits with its kind's ``exit_code`` (see :mod:`storygraph.errors`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StorygraphError as e:
            _report(e.label, str(e))
            ctx.exit(e.exit_code)
        except OSError as e:  # a full disk, a folder that cannot be written
            _report("error:", _io_message(e))
            ctx.exit(EXIT_FAILED)


# -- where a story is: --dir DIR, --graph URI ---------------------------------------------------------------
#
# Every command that works on a story folder takes ``--dir/-d DIR``; ``--graph/-g`` says where the graph lives
# when it is not embedded in the folder (a Neo4j URI). For scripts written before ``--dir`` was everywhere, a
# folder given to ``--graph`` still means ``--dir``, and commands that took the folder as a positional argument
# still do (neither is shown in --help).


class _CompatArgument(click.Argument):
    """An optional positional argument kept for old command lines, left out of the usage line."""

    def get_usage_pieces(self, ctx: click.Context) -> list:
        return []


def _where(directory, graph, positional=None) -> tuple[Path | None, str | None]:
    """``(story folder, Neo4j URI)`` from ``--dir``, ``--graph`` and an old-style positional folder."""
    from .graphdb.neo4j import is_neo4j_uri

    folders = {str(Path(d)) for d in (directory, positional) if d is not None}
    uri = None
    if graph is not None:
        if is_neo4j_uri(graph):
            uri = graph
        else:
            folders.add(str(Path(graph)))
    if len(folders) > 1:
        raise InvalidInput(f"two story folders given ({', '.join(sorted(folders))}): pass one with --dir")
    return (Path(folders.pop()) if folders else None), uri


def _location_options(f, positional: bool):
    f = click.option("--graph", "-g", "graph_", default=None, metavar="URI", help=GRAPH_HELP)(f)
    # plain paths: a path that is not a folder is refused by the command, in one line (see _a_folder)
    f = click.option("--dir", "-d", "dir_", default=None, type=click.Path(), help=DIR_HELP)(f)
    if positional:
        f = click.argument("old_dir", required=False, cls=_CompatArgument, type=click.Path())(f)
    return f


def graph_options(f):
    """``--dir``/``--graph``, ``--story`` and ``--database`` for commands that read or write a story's graph.

    The command gets ``graph``: the Neo4j URI, else the story folder (its embedded graph); and ``directory``,
    the story folder, when it names that parameter."""
    takes_dir = "directory" in inspect.signature(f).parameters

    @functools.wraps(f)
    def command(*args, dir_=None, graph_=None, **kwargs):
        folder, uri = _where(dir_, graph_)
        if folder is None and uri is None:
            raise click.UsageError("name the story: --dir DIR (or --graph neo4j://…)")
        if takes_dir:
            kwargs["directory"] = folder
        return f(*args, graph=uri or str(folder), **kwargs)

    command = click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")(command)
    command = click.option("--story", "story_id", default=None, help="story id, when the graph holds several")(command)
    return _location_options(command, positional=False)


def folder_options(positional: bool = False, default: str | None = None):
    """``--dir`` (required unless ``default``) and ``--graph`` for commands that work in a story folder; they
    get ``directory`` (a Path) and ``graph`` (a Neo4j URI or None). ``positional``: the folder may also come
    as the old positional argument."""

    def decorate(f):
        @functools.wraps(f)
        def command(*args, dir_=None, graph_=None, old_dir=None, **kwargs):
            folder, uri = _where(dir_, graph_, old_dir)
            if folder is None and default is None:
                raise click.UsageError("name the story folder: --dir DIR")
            return f(*args, directory=folder or Path(default), graph=uri, **kwargs)

        return _location_options(command, positional)

    return decorate


@click.group(cls=_Storygraph, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="storygraph")
def main():
    """storygraph: a story engine for LTX-2 whose memory is a graph database."""


@main.command()
@folder_options(positional=True)
def init(directory, graph):
    """Create a story folder with a storygraph.toml holding every setting."""
    from .config import CONFIG_NAME, Config

    d = Path(directory)
    _a_folder(d)
    if (d / CONFIG_NAME).exists():
        _console().print(f"{d / CONFIG_NAME} already exists; left unchanged")
        return
    d.mkdir(parents=True, exist_ok=True)
    (d / "media").mkdir(exist_ok=True)
    path = Config().save(d)
    _console().print(f"created {path}\nnext: storygraph load STORY.yaml --dir {d}")


@main.command()
@click.argument("story_file", type=click.Path())
@click.option("--dir", "-d", "directory", default=None, type=click.Path(),
              help="the story folder it is for: its storygraph.toml may allow more reference folders")
def validate(story_file, directory):
    """Check a story file; exit 2 with file, line and field if it is broken."""
    if directory is not None:
        _a_folder(directory)
    story = _load_story(story_file, directory)
    from .timeline import place_scenes

    branches = {p.branch for p in place_scenes([s.id for s in story.scenes], list(story.transitions)).values()}
    _console().print(
        f"[green]ok[/] {story_file}: story {story.id!r}, {len(story.characters)} characters, "
        f"{len(story.environments)} environments, {len(story.scenes)} scenes, "
        f"{len(story.transitions)} transitions, {len(branches)} branch(es)", markup=True)


@main.command()
@click.argument("story_file", type=click.Path())
@graph_options
def load(story_file, graph, directory, story_id, database):
    """Load (or update) a story file into a graph: what changed is applied, and the generated scenes it affects
    become stale (run makes them again). Loading the same file twice changes nothing."""
    from contextlib import nullcontext

    from .engine.indexes import placements_changing

    if directory is not None:
        _a_folder(directory)
    story = _load_story(story_file, directory)
    store = _open_store(graph, story_id or story.id, database)
    try:
        # a moved scene's appearances move in the vector index too: it checks them on its next open
        with placements_changing(Path(directory) / "vectors") if directory else nullcontext({}) as moving:
            summary = store.load_story(story)
            moving["moved"] = bool(summary.changes.get("placed"))
    finally:
        store.close()
    new = ", ".join(f"{n} {k}" for k, n in summary.created.items() if n) or "nothing new"
    console = _console()
    console.print(
        f"loaded {story.id!r} into {graph}: {summary.scenes} scenes, {summary.characters} characters, "
        f"{summary.environments} environments, {summary.transitions} transitions ({new})")
    _print_changes(console, summary)


def _print_changes(console, summary) -> None:
    """What a load changed in the graph, and which scenes are stale now (and why)."""
    from rich.markup import escape

    c = summary.changes or {}
    lines = [f"changed {what} {i}: {', '.join(fields)}" for what, key in (
        ("scene", "scenes"), ("character", "characters"), ("environment", "environments"))
        for i, fields in (c.get(key) or {}).items()]
    lines += [f"changed the transition into {i}: {', '.join(f)}" for i, f in (c.get("transitions") or {}).items()]
    lines += [f"moved {i}: now after {new or 'nothing'} (was after {old or 'nothing'})"
              for i, (old, new) in (c.get("moved") or {}).items()]
    if c.get("missing"):
        lines.append(f"kept {len(c['missing'])} scene(s) the file no longer has: {', '.join(c['missing'])} "
                     "(storygraph delete SCENE removes one)")
    for line in lines:
        console.print(escape(line))
    if summary.stale:
        console.print(f"[yellow]{len(summary.stale)} scene(s) stale now[/] (storygraph run makes them again):",
                      markup=True)
        for sid, why in summary.stale.items():
            console.print(f"  {escape(sid)}: {escape(why)}")


def _parse_param(text: str):
    if "=" not in text:
        raise click.BadParameter(f"{text!r}: expected key=value")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except (json.JSONDecodeError, RecursionError):
        return key, value


def _timeout_option(ctx, param, value):
    from .graphdb.console import check_timeout
    from .graphdb.store import QueryError

    try:
        return check_timeout(value)
    except QueryError as e:
        raise click.BadParameter(str(e)) from None


@contextmanager
def _reading_store(graph: str, story_id, database, read_only: bool = False):
    """A store to read from: the story itself or, when another process holds it open for writing, a consistent
    snapshot that process makes for us (see graphdb/holder.py). ``read_only``: open an embedded story read-only
    (nothing, not even the upkeep done on opening, is written)."""
    from .graphdb import StoryLocked, open_store
    from .graphdb.holder import holder_of, remote_snapshot

    try:
        store = open_store(graph, story_id, database=database, create=False, read_only=read_only)
    except StoryLocked:
        info = holder_of(graph)
        if info is None:
            raise
        with remote_snapshot(info, graph) as snapshot:
            store = open_store(snapshot, story_id, read_only=True, create=False)
            try:
                yield store
            finally:
                store.close()
        return
    try:
        yield store
    finally:
        store.close()


@main.command()
@click.argument("cypher")
@graph_options
@click.option("--param", "-p", "params", multiple=True, help="query parameter key=value (value parsed as JSON if it can be)")
@click.option("--json", "as_json", is_flag=True, help="print JSON rows instead of a table")
@click.option("--timeout", type=float, default=30.0, show_default=True, callback=_timeout_option,
              help="seconds before the query is stopped, parsing included (0.001 to 3600)")
@click.option("--max-rows", type=click.IntRange(1, 1_000_000), default=1000, show_default=True,
              help="rows returned at most; more are cut and the output says so")
def query(cypher, graph, story_id, database, params, as_json, timeout, max_rows):
    """Run a read-only Cypher query over a story. Writes, files and settings are refused.

    On an embedded story that `storygraph run`, `resume` or `studio` holds open, the query is answered by
    that process.
    """
    from .graphdb import QueryError, ReadOnlyViolation, StoryLocked, open_store
    from .graphdb.holder import holder_of, remote_query

    values = dict(_parse_param(p) for p in params)
    _existing_graph(graph)
    try:
        try:
            store = open_store(graph, story_id, database=database, create=False)
        except StoryLocked:
            info = holder_of(graph)
            if info is None:
                raise
            result = remote_query(info, cypher, values, timeout, max_rows)
        else:
            try:
                result = store.query(cypher, values, read_only=True, timeout_s=timeout, max_rows=max_rows)
            finally:
                store.close()
    except ReadOnlyViolation as e:
        _fail(f"{e} (the graph is unchanged)", EXIT_REFUSED)
    except QueryError as e:
        _fail(f"query failed: {e}", EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(result.records(), ensure_ascii=False, default=str))
        if result.truncated:
            _console(stderr=True).print(f"truncated: only the first {len(result.rows)} rows (--max-rows)")
        return
    from rich.table import Table

    table = Table(*result.columns)
    for row in result.rows:
        table.add_row(*(json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v for v in row))
    console = _console()
    console.print(table)
    more = " — truncated: more rows matched (raise --max-rows)" if result.truncated else ""
    console.print(f"{len(result.rows)} row(s){more}")


@main.command()
@graph_options
def show(graph, story_id, database):
    """A summary of a story: scenes by status, characters, branches, memory."""
    _existing_graph(graph)
    with _reading_store(graph, story_id, database) as store:
        meta = store.story_meta()
        if meta is None:
            raise NotFound(f"{graph} holds no story (or several: name one with --story)")
        scenes = store.scenes()
        characters = store.characters()
        transitions = store.transitions()
        appearances = sum(1 for _ in store.appearance_keys())
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{meta['title']}[/] ({meta['id']}) in {graph}", markup=True)
    by_status: dict = {}
    for s in scenes:
        by_status[s.status] = by_status.get(s.status, 0) + 1
    branches = {s.placement.branch for s in scenes}
    console.print(f"{len(scenes)} scenes ({', '.join(f'{n} {k}' for k, n in sorted(by_status.items()))}), "
                  f"{len(branches)} branch(es), {len(transitions)} transitions, {len(characters)} characters, "
                  f"{appearances} remembered appearances")
    table = Table()
    for name in ("scene", "clock", "branch", "status", "characters", "identity"):
        table.add_column(name, no_wrap=True)
    table.add_column("action", no_wrap=True, overflow="ellipsis", max_width=60)
    for s in scenes:
        ident = "" if s.scores.identity is None else f"{s.scores.identity:.3f}"
        table.add_row(s.id, f"{s.clock:g}", s.placement.branch, s.status, ", ".join(s.spec.characters), ident,
                      s.spec.action)
    console.print(table)


def _engine(directory, graph=None, story_id=None, database=None, config=None):
    from .engine.engine import StoryEngine

    return StoryEngine.open(directory, graph=graph, config=config, story=story_id, database=database)


def _unexpected(e: Exception) -> None:
    """A model or library failure while generating: one line, not a traceback (a StorygraphError is left to the
    command group)."""
    if isinstance(e, StorygraphError):
        raise e
    if isinstance(e, OSError):
        _fail(_io_message(e))
    _fail(f"{type(e).__name__}: {e}")


def _io_message(e: OSError) -> str:
    """One line for a failed write: what, why, and that ``resume`` finishes the story once it can write again."""
    import errno

    what = f" writing {e.filename}" if e.filename else ""
    after = "then `storygraph resume --dir DIR` finishes the story (what was committed is kept)"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{what}: free some space, {after}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{what}: {e.strerror}; make the story folder writable, {after}"
    return f"{e.strerror or type(e).__name__}{what or ''}" + (f": {e}" if not e.strerror else "")


def _close(engine) -> None:
    """Close the engine. When the command is already failing, that failure is the one reported: a close that
    fails too (a full disk cannot take the vector index either) adds nothing but a second traceback."""
    failing = sys.exc_info()[0] is not None
    try:
        engine.close()
    except (StorygraphError, OSError):
        if not failing:
            raise


@contextmanager
def _holding(engine):
    """While this process holds an embedded story, answer other local processes' reads of it (holder.py)."""
    if getattr(engine.store, "backend", None) != "ladybug":
        yield
        return
    from .graphdb.holder import HolderService

    service = HolderService(engine.store, engine.dir).start()
    try:
        yield
    finally:
        service.close()


def _run_with_progress(engine, takes=None, until=None, note: str = "", selection=None, keep_stale: bool = False,
                       timings=None):
    """Run ``selection`` (default: every scene that needs it, stale ones unless ``keep_stale``, up to ``until``)
    with a progress display: the story's scenes, the current scene's stage and denoising step, and the time left.
    The first Ctrl-C cancels after the current denoising step (the scene goes back to planned); a second one stops
    at once. With ``timings`` (a path), append one JSON line per committed scene saying where its time went."""
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .engine.runs import RunControl, Selection

    if timings:
        out = Path(timings)
        out.parent.mkdir(parents=True, exist_ok=True)

        def write_timings(record):
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

        engine.on_timings(write_timings)
    selection = selection or Selection("all", until=until, keep_stale=keep_stale)
    console = _console()
    if note:
        console.print(f"[yellow]{note}[/]", markup=True)
    control = RunControl()

    def interrupt(signum, frame):
        if control.cancelled:
            raise KeyboardInterrupt
        control.cancel()
        console.print("[yellow]cancelling after this denoising step (Ctrl-C again to stop at once)[/]", markup=True)

    try:
        previous = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[left]}"), console=console) as progress:
            story_task = progress.add_task(selection.describe(), total=None, left="")
            scene_task = progress.add_task("", total=1, left="")

            def on_progress(st):
                left = "" if st.eta_s is None else f"~{_seconds(st.eta_s)} left"
                progress.update(story_task, total=st.scenes, completed=len(st.done), left=left)
                what = f"{st.scene}: {st.stage}" + ("" if st.take is None else f" (take {st.take})")
                progress.update(scene_task, description=what, total=max(1, st.steps), completed=st.step)

            outcome = engine.run_selection(selection, takes=takes, control=control, on_progress=on_progress)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if outcome.skipped:
        console.print(f"skipped (their parent is not done): {', '.join(outcome.skipped)}")
    return outcome.done


def _seconds(x: float) -> str:
    x = int(round(max(0.0, x)))
    return f"{x // 60} min {x % 60} s" if x >= 60 else f"{x} s"


def _cancelled(engine) -> None:
    planned = [s.id for s in engine.store.scenes() if s.status != "done"]
    _report("cancelled:", f"stopped between two denoising steps; {len(planned)} scene(s) left to make — "
                          "`storygraph resume` continues")


def _summary(engine) -> None:
    scenes = engine.store.scenes()
    by: dict = {}
    for s in scenes:
        by[s.status] = by.get(s.status, 0) + 1
    _console().print(f"{len(scenes)} scenes: " + ", ".join(f"{n} {k}" for k, n in sorted(by.items())))
    for s in scenes:
        if s.status == "failed":
            _console().print(f"[red]{s.id} failed:[/] {s.notes.strip().splitlines()[-1] if s.notes else ''}",
                             markup=True)
        elif s.status == "stale":
            _console().print(f"[yellow]{s.id} stale:[/] {s.stale_reason}", markup=True)


def _quiet(verbose: bool) -> None:
    if not verbose:
        from .engine.quiet import quiet_libraries

        quiet_libraries()


VERBOSE_HELP = "also show the libraries' own output (loading bars, logs, warnings)"


@main.command()
@click.argument("story_file", type=click.Path())
@folder_options()
@click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")
@click.option("--model", default=None, help="LTX-2 weights: a folder or hub id (overrides models.ltx2)")
@click.option("--takes", type=int, default=None, help="takes per scene; the best continues the timeline")
@click.option("--until", default=None, help="stop after this scene")
@click.option("--branch", default=None, help="only this timeline: its scenes and the ones it follows")
@click.option("--keep-stale", is_flag=True, help="leave stale scenes as they are (default: make them again)")
@click.option("--tiny", is_flag=True,
              help="tiny random-weight models at the smallest size the rules take: a smoke run of this story file")
@click.option("--timings", type=click.Path(dir_okay=False), default=None,
              help="append one JSON line per scene to this file: seconds per stage, the generator's, memory")
@click.option("--verbose", "-v", is_flag=True, help=VERBOSE_HELP)
def run(story_file, directory, graph, database, model, takes, until, branch, keep_stale, tiny, timings, verbose):
    """Load a story (applying what changed in it) and generate every scene that needs it — planned, stale,
    failed, interrupted — in timeline order."""
    from .config import CONFIG_NAME, Config
    from .engine.runs import Cancelled, Selection

    _a_folder(directory)
    _quiet(verbose)
    story = _load_story(story_file, directory)
    note = ""
    if tiny:
        from .engine import demo as demo_mod

        has_config = (Path(directory) / CONFIG_NAME).exists()
        _console().print(f"[bold yellow]{demo_mod.SMOKE_NOTE}[/]", markup=True)
        config = demo_mod.prepare(directory, save=not has_config, quiet=not verbose)
        story = demo_mod.demo_story(story)
        if has_config:
            note = f"--tiny: the models of {Path(directory) / CONFIG_NAME} are left aside for this run"
    else:
        config = Config.load(directory) if Path(directory).exists() else Config()
    if model:
        config = config.with_overrides(models={"ltx2": model})
    engine = _engine(directory, graph, story.id, database, config)
    selection = (Selection("branch", branch, until, keep_stale=keep_stale) if branch
                 else Selection("all", until=until, keep_stale=keep_stale))
    try:
        with _holding(engine):
            engine.load(story)
            _print_changes(_console(), engine.last_load)
            _run_with_progress(engine, takes=takes, note=note, selection=selection, timings=timings)
            _summary(engine)
    except Cancelled:
        _cancelled(engine)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - a clear line for any model or library error
        _unexpected(e)
    finally:
        _close(engine)


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")
@click.option("--takes", type=int, default=None, help="takes per scene; the best continues the timeline")
@click.option("--branch", default=None, help="only this timeline: its scenes and the ones it follows")
@click.option("--keep-stale", is_flag=True, help="leave stale scenes as they are (default: make them again)")
@click.option("--timings", type=click.Path(dir_okay=False), default=None,
              help="append one JSON line per scene to this file: seconds per stage, the generator's, memory")
@click.option("--verbose", "-v", is_flag=True, help=VERBOSE_HELP)
def resume(directory, graph, story_id, database, takes, branch, keep_stale, timings, verbose):
    """Finish a run that was stopped or killed, from the first unfinished scene (stale ones included)."""
    from .engine.runs import Cancelled, Selection

    _existing(directory, graph)
    _quiet(verbose)
    engine = _engine(directory, graph, story_id, database)
    try:
        with _holding(engine):
            selection = Selection("branch", branch, keep_stale=keep_stale) if branch else None
            _run_with_progress(engine, takes=takes, selection=selection, keep_stale=keep_stale, timings=timings)
            _summary(engine)
    except Cancelled:
        _cancelled(engine)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001
        _unexpected(e)
    finally:
        _close(engine)


@main.command()
@click.argument("out", type=click.Path(dir_okay=False))
@folder_options()
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--branch", default=None, help="the timeline to cut (default: the main one)")
def cut(out, directory, graph, story_id, branch):
    """Write a timeline as one film: the chosen take of each scene, in story order, with sound."""
    from .engine.cut import write_cut

    _existing(directory, graph)
    with _reading_store(graph or str(directory), story_id, None) as store:
        result = write_cut(store, out, branch, story_dir=None if graph else directory)
    stopped = f"; stops before {result.stopped_at} (not generated)" if result.stopped_at else ""
    _console().print(f"wrote {out}: timeline {result.branch}, {len(result.scenes)} scene(s), "
                     f"{result.duration_s:.2f} s{stopped}")


def _existing(directory, uri: str | None = None) -> None:
    """Refuse, before anything is opened or created, a story folder that holds no story: one that does not exist,
    a path that is not a folder, a folder without a graph (or whose ``graph`` is not a database file). With a
    Neo4j URI the graph is elsewhere and the folder only holds media: it need not exist yet."""
    d = Path(directory)
    _a_folder(d)
    if uri is not None:
        return
    if not d.is_dir():
        raise InvalidInput(f"no story folder {d}")
    g = d / "graph"
    if not g.exists():
        raise InvalidInput(f"{d} is not a story folder: it has no graph (load a story into it first: "
                           f"storygraph load STORY.yaml --dir {d})")
    if not g.is_file():
        raise InvalidInput(f"{g} is not a storygraph database (a LadybugDB database is one file)")


def _a_folder(directory) -> None:
    """Refuse a story folder path that exists and is not a folder."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InvalidInput(f"{d} is not a folder: a story folder holds the graph, media and storygraph.toml")


def _existing_graph(graph: str) -> None:
    """``_existing`` for commands that get the graph as one string (a Neo4j URI or the story folder)."""
    from .graphdb.neo4j import is_neo4j_uri

    if not is_neo4j_uri(graph):
        _existing(graph)


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def status(directory, graph, story_id, as_json):
    """What needs work: planned, stale, failed and interrupted scenes (with why), in timeline order."""
    from .timeline import timeline_order

    _existing(directory, graph)
    with _reading_store(graph or directory, story_id, None) as store:
        scenes = store.scenes()
    order = {sid: i for i, sid in enumerate(timeline_order({s.id: s.placement for s in scenes}))}
    todo = sorted((s for s in scenes if s.status != "done"), key=lambda s: order[s.id])
    counts: dict = {}
    for s in scenes:
        counts[s.status] = counts.get(s.status, 0) + 1

    def why(s) -> str:
        if s.status == "stale":
            return s.stale_reason
        if s.status in ("failed", "interrupted") and s.notes.strip():
            return s.notes.strip().splitlines()[-1]
        return ""

    if as_json:
        click.echo(json.dumps({"counts": counts, "scenes": [
            {"id": s.id, "status": s.status, "why": why(s), "from": s.stale_from or None} for s in todo]}))
        return
    from rich.table import Table

    console = _console()
    console.print(f"{len(scenes)} scenes: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if not todo:
        console.print("nothing to do")
        return
    table = Table("scene", "status", "why")
    for s in todo:
        table.add_row(s.id, s.status, why(s))
    console.print(table)
    console.print(f"storygraph resume --dir {directory} makes them (stale ones included; --keep-stale leaves those)")


def _story_options(f):
    """``--story`` and ``--database``, for commands that open a story folder's engine."""
    f = click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")(f)
    return click.option("--story", "story_id", default=None, help="story id, when the graph holds several")(f)


@contextmanager
def _opened(directory, graph, story_id=None, database=None):
    """The engine of an existing story folder, closed afterwards."""
    _existing(directory, graph)
    engine = _engine(directory, graph, story_id, database)
    try:
        yield engine
    finally:
        _close(engine)


@main.command()
@click.argument("scene_id")
@folder_options()
@_story_options
@click.option("--takes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="takes to make; they compete with the chosen one, which changes only when one is better")
def generate(scene_id, directory, graph, story_id, database, takes):
    """Generate takes of one scene (its parent must be generated)."""
    with _opened(directory, graph, story_id, database) as engine:
        try:
            with _holding(engine):
                if engine.store.scene(scene_id) is None:
                    raise NotFound(f"no scene {scene_id!r}")
                made = engine.generate(scene_id, takes=takes)
                after = engine.store.scene(scene_id)
        except Exception as e:  # noqa: BLE001
            _unexpected(e)
    kept = " (the chosen take stays: no new take beat it)" if after.chosen_take not in {t.take for t in made} else ""
    _console().print(f"{scene_id}: made take(s) {', '.join(str(t.take) for t in made)}; take {after.chosen_take} "
                     f"continues the timeline{kept}")


@main.command()
@click.argument("scene_id")
@click.argument("take", type=int)
@folder_options()
@_story_options
def choose(scene_id, take, directory, graph, story_id, database):
    """Make TAKE the take of SCENE that continues the timeline; scenes made from the one it replaces go stale."""
    with _opened(directory, graph, story_id, database) as engine:
        before = {s.id for s in engine.store.scenes(status="stale")}
        engine.choose_take(scene_id, take)
        stale = [s for s in engine.store.scenes(status="stale") if s.id not in before]
    _console().print(f"{scene_id}: take {take} chosen")
    for s in stale:
        _console().print(f"  {s.id} stale: {s.stale_reason}")


@main.command()
@click.argument("scene_id")
@folder_options()
@_story_options
@click.option("--cascade", is_flag=True, help="also delete the generated scenes after it")
def delete(scene_id, directory, graph, story_id, database, cascade):
    """Delete a scene with its takes, memory and media. Refused when generated scenes follow it, unless --cascade."""
    with _opened(directory, graph, story_id, database) as engine:
        gone = engine.delete_scene(scene_id, cascade=cascade)
    _console().print(f"deleted {len(gone)} scene(s): {', '.join(gone)}")


@main.command("delete-transition")
@click.argument("from_id")
@click.argument("to_id")
@folder_options()
@_story_options
def delete_transition(from_id, to_id, directory, graph, story_id, database):
    """Delete the transition FROM -> TO: TO starts a timeline of its own, and it and what follows go stale."""
    with _opened(directory, graph, story_id, database) as engine:
        marks = engine.delete_transition(from_id, to_id)
    _console().print(f"deleted the transition {from_id} -> {to_id}; {len(marks)} scene(s) stale")


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--repair", is_flag=True, help="fix what can be fixed (opens the story for writing)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def check(directory, graph, story_id, repair, as_json):
    """Check that graph, vector index and media agree; with --repair, fix what can be. Exit 1 when problems stay."""
    from .engine import check as checking

    _existing(directory, graph)
    if repair:
        with _opened(directory, graph, story_id) as engine:
            findings = checking.inspect(engine.store, directory)
            checking.repair(engine, findings)
    else:
        with _reading_store(graph or directory, story_id, None, read_only=True) as store:
            findings = checking.inspect(store, directory)
    problems = [f for f in findings if f.problem]
    if as_json:
        click.echo(json.dumps({"ok": not problems, "findings": [f.as_dict() for f in findings]}))
    else:
        from rich.table import Table

        console = _console()
        if findings:
            table = Table("kind", "what", "detail", "state")
            for f in findings:
                state = "repaired" if f.repaired else ("ok" if not f.problem else
                                                      "repairable (--repair)" if f.repairable else "left")
                table.add_row(f.kind, f.what, f.detail, state)
            console.print(table)
        console.print("consistent" if not problems else f"{len(problems)} problem(s) left")
    if problems:
        sys.exit(EXIT_FAILED)


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--format", "fmt", type=click.Choice(["ltx-trainer"]), default="ltx-trainer", show_default=True)
@click.option("--out", default=None, help="output folder (default DIR/export)")
@click.option("--min-identity", type=float, default=None)
@click.option("--min-text-alignment", type=float, default=None)
@click.option("--min-subject-consistency", type=float, default=None)
@click.option("--min-transition-smoothness", type=float, default=None)
@click.option("--ic-lora", is_flag=True, help="add each scene's parent video as reference_path (IC-LoRA)")
def export(directory, graph, story_id, fmt, out, min_identity, min_text_alignment, min_subject_consistency,
           min_transition_smoothness, ic_lora):
    """Write a training set (dataset.json + videos, scores and embeddings beside it)."""
    from .engine.export import ExportFilter, export_ltx_trainer

    _existing(directory, graph)
    with _reading_store(graph or directory, story_id, None) as store:
        result = export_ltx_trainer(store, out or Path(directory) / "export", ExportFilter(
            min_identity, min_text_alignment, min_subject_consistency, min_transition_smoothness), ic_lora=ic_lora,
            story_dir=directory)
    _console().print(f"wrote {result['entries']} entries to {result['dir']}/dataset.json "
                     f"({result['skipped']} skipped by the filters)")


@main.command()
@folder_options()
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--database", default=None, envvar="NEO4J_DATABASE", help="Neo4j database name")
@click.option("--modes", default="context,reference,keyframe", show_default=True,
              help="memory modes to compare, comma-separated (extend, context, reference, keyframe)")
@click.option("--scenes", default=None, help="scene ids, comma-separated (default: every generated scene with characters)")
@click.option("--out", default=None, help="output folder for compare.json and compare.png (default DIR/compare)")
def compare(directory, graph, story_id, database, modes, scenes, out):
    """Generate the same scenes under several memory modes as sibling takes (the chosen takes stay) and compare
    cross-shot identity and consistency per mode and per recurrence gap."""
    from rich.table import Table

    _existing(directory, graph)
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    scene_ids = [s.strip() for s in scenes.split(",") if s.strip()] if scenes else None
    console = _console()
    engine = _engine(directory, graph, story_id, database)
    try:
        with _holding(engine):
            result = engine.compare(wanted, scene_ids, progress=lambda sid, mode, info: console.print(
                f"{sid}: {mode}{' (take already made)' if info.get('reused') else ''}"))
    except Exception as e:  # noqa: BLE001
        _unexpected(e)
    finally:
        _close(engine)
    if result.random_weights:
        console.print(f"[bold yellow]{result.note}[/]", markup=True)

    def fmt(v):
        return "" if v is None else f"{v:.3f}"

    table = Table("mode", "scenes", "identity", "subject consistency", "background consistency")
    for mode, row in result.by_mode().items():
        table.add_row(mode, str(row["scenes"]), fmt(row["identity"]), fmt(row["subject_consistency"]),
                      fmt(row["background_consistency"]))
    console.print(table)
    gaps = Table("scenes since last seen", *result.modes)
    for label, row in result.by_gap().items():
        if any(cell["n"] for cell in row.values()):
            gaps.add_row(label, *(f"{fmt(row[m]['identity'])} (n={row[m]['n']})" for m in result.modes))
    console.print(gaps)
    paths = result.write(out or Path(directory) / "compare")
    console.print(f"wrote {paths['json']} and {paths['png']}")


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_id", default=None, help="story id, when the graph holds several")
@click.option("--out", default=None, help="output folder (default DIR/report)")
def report(directory, graph, story_id, out):
    """A PNG and an HTML page: identity per character and the other scores across the story."""
    from .engine.report import write_report

    _existing(directory, graph)
    with _reading_store(graph or directory, story_id, None) as store:
        meta = store.story_meta() or {}
        result = write_report(store, out or Path(directory) / "report", title=meta.get("title", ""),
                              story_dir=directory)
    _console().print(f"wrote {result['html']} and {result['png']}")


@main.command()
@folder_options(positional=True, default="storygraph-demo")
@click.option("--story", "story_file", default=None, type=click.Path(dir_okay=False),
              help="your story file instead of the example (made at the tiny size)")
@click.option("--overwrite", is_flag=True, help="replace the folder if it exists")
@click.option("--ltx-version", type=click.Choice(["2.0", "2.3", "2.5"]), default="2.3", show_default=True,
              help="the LTX-2 generation of the tiny checkpoint (2.5: Gemma 4 text encoder, duration head)")
@click.option("--ic-lora", is_flag=True, help="also build a tiny random IC-LoRA: cuts go in as reference sheets")
@click.option("--until", default=None, help="stop after this scene")
@click.option("--verbose", "-v", is_flag=True, help=VERBOSE_HELP)
def demo(directory, graph, story_file, overwrite, ltx_version, ic_lora, until, verbose):
    """A story end to end with tiny random-weight models made on the spot (a smoke run): the example, or yours."""
    import shutil
    import time

    from .engine import demo as demo_mod

    source = story_file or str(demo_mod.example_story_path())
    story = demo_mod.demo_story(_load_story(source))  # a broken file is refused before anything is written
    d = Path(directory)
    _a_folder(d)
    if d.exists() and any(d.iterdir()):
        if not overwrite:
            _fail(f"{d} exists and is not empty; pass --overwrite or another folder", EXIT_BAD_INPUT)
        if not ((d / "graph").exists() or (d / "storygraph.toml").exists()):
            _fail(f"{d} is not a story folder (no graph, no storygraph.toml): --overwrite only replaces a story",
                  EXIT_BAD_INPUT)
        shutil.rmtree(d)
    _quiet(verbose)
    t0 = time.perf_counter()
    console = _console()
    console.print(f"[bold yellow]{demo_mod.SMOKE_NOTE}[/]", markup=True)
    console.print(f"building tiny CLIP, DINOv2 and LTX-{ltx_version} models from configs"
                  f"{' and a tiny IC-LoRA' if ic_lora else ''}…")
    config = demo_mod.prepare(d, ltx_version=ltx_version, ic_lora=ic_lora, quiet=not verbose)
    if not story_file:  # the example's stand-in reference images are drawn inside the demo folder
        story = demo_mod.demo_story(_load_story(source), refs_dir=d / "refs")
    engine = _engine(d, graph, config=config)
    try:
        engine.load(story)
        t_run = time.perf_counter()
        done = _run_with_progress(engine, until=until)
        run_s = time.perf_counter() - t_run
        _summary(engine)
        from .engine.report import write_report

        write_report(engine.store, d / "report", title=f"{story.title} (smoke run)", note=demo_mod.SMOKE_NOTE,
                     story_dir=engine.dir)
    finally:
        _close(engine)
    per_scene = f", {run_s / len(done):.1f} s per scene" if done else ""
    size = demo_mod.DEMO_DEFAULTS
    console.print(f"done in {time.perf_counter() - t0:.1f} s ({size.width}x{size.height}, {size.frames} frames, "
                  f"{size.steps} steps{per_scene}): story in {d}, report in {d / 'report' / 'report.html'}\n"
                  f"explore it: storygraph show --dir {d} · storygraph studio --dir {d}")


def _viewer_options(f):
    f = click.option("--allow-remote", is_flag=True,
                     help="allow a non-loopback --host (anyone who reaches it and holds the token can edit)")(f)
    f = click.option("--port", type=int, default=8765, show_default=True)(f)
    f = click.option("--host", default="127.0.0.1", show_default=True)(f)
    return f


def _serve(app, host, port, allow_remote):
    from .webviz.server import serve

    try:
        serve(app, host=host, port=port, allow_remote=allow_remote, announce=lambda t: _console(stderr=True).print(t))
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e}")


@main.command()
@folder_options(positional=True)
@click.option("--story", "story_file", default=None, type=click.Path(),
              help="load (or update) this story file first")
@_viewer_options
def studio(directory, graph, story_file, host, port, allow_remote):
    """The live viewer and the engine in one process: watch, query, edit and generate scene by scene."""
    from .webviz import create_app

    if story_file:
        _a_folder(directory)
        story = _load_story(story_file, directory)
    else:
        _existing(directory, graph)
    engine = _engine(directory, graph)
    try:
        with _holding(engine):
            if story_file:
                engine.load(story)
            app = create_app(engine.store, engine, story_dir=engine.dir)
            _serve(app, host, port, allow_remote)
    finally:
        _close(engine)


@main.command()
@graph_options
@_viewer_options
def serve(graph, directory, story_id, database, host, port, allow_remote):
    """A viewer that follows a story's event log (read-only; several can run against Neo4j)."""
    from .webviz import create_app

    _existing_graph(graph)
    store = _open_store(graph, story_id, database, create=False)
    try:
        app = create_app(store, None, story_dir=directory)
        _serve(app, host, port, allow_remote)
    finally:
        store.close()


@main.group()
def models():
    """Model weights: what is configured and whether it is there."""


@models.command("check")
@folder_options(default=".")
def models_check_cmd(directory, graph):
    """List the configured models, whether their files are present, the LTX-2 version, and the device."""
    from rich.table import Table

    from .config import Config
    from .engine.models import models_check

    _a_folder(directory)
    config = Config.load(directory)
    rows = models_check(config, story_dir=directory)
    table = Table("model", "role", "source", "present", "version", "device", "note")
    for r in rows:
        table.add_row(r["name"], r["role"], r["source"], "yes" if r["present"] else "[red]no[/]",
                      f"LTX-{r['version']}" if r.get("version") else "", r["device"], r.get("note", ""))
    _console().print(table)
    if not all(r["present"] for r in rows):
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
