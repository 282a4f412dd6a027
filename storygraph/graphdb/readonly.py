"""The first of two guards on console Cypher: an allow-list parse that runs before any database sees the query.

A console query (``storygraph query``, ``StoryEngine.query``, the studio's console) is accepted only when it
is ONE statement of reading clauses — MATCH, OPTIONAL MATCH, WHERE, WITH, UNWIND, RETURN, ORDER BY, SKIP,
LIMIT, UNION, CASE, list and pattern comprehensions, EXISTS/COUNT subqueries — plus CALLs of a short list
of catalog functions, with functions from an allow-list. Everything else is refused before it runs.

Why the rule is sound. An allow-list parse is only as good as its agreement with the database about where
tokens begin and end: if the guard thinks a ``*/`` ends a comment and the database does not, the guard
checks a different query from the one that runs. So the tokenizer refuses every construct whose extent
could be read two ways, instead of guessing how the engine reads it:

* no comments at all (``//``, ``/*``), no ``;`` except one at the very end;
* outside string literals only printable ASCII and the four ASCII blanks (LadybugDB also treats U+00A0 and
  U+2028 as blanks; letters outside ASCII, look-alike quotes and invisible characters are refused);
* string literals take only the escapes ``\\\\ \\' \\" \\n \\t \\r \\b \\f \\uXXXX \\UXXXXXXXX`` — the
  ones LadybugDB and Neo4j decode alike (tests/test_readonly_fuzz.py checks every decoded value against the
  engine) — and no control characters;
* backquoted names hold only letters, digits, ``_``, ``-``, ``.`` and spaces (no doubled backquotes);
* numbers are decimal, so ``0x…`` or ``1.`` are refused rather than split differently.

On that token stream the parser accepts a sub-grammar of openCypher in which every clause keyword
stands where both openCypher dialects expect a clause, so the engine cannot see a clause the guard did not
check. Words that name writing, schema, transaction or file clauses are refused even as names (except as a
property key after ``.``), as a second line inside the first guard.

Size and depth are bounded before anything recursive runs (``MAX_QUERY_CHARS``, ``MAX_TOKENS``,
``MAX_DEPTH``), so the guard itself is linear and a hostile query cannot make the engine's parser recurse
without bound. The second guard lives in each backend (see ``embedded.py`` and ``neo4j.py``): it does not
rely on this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .store import ReadOnlyViolation

#: Longer console queries are refused (the studio's text box, ``storygraph query`` and the Python API alike).
MAX_QUERY_CHARS = 8_000
#: Tokens in one query.
MAX_TOKENS = 2_000
#: Nesting of brackets; sub-expressions may nest twice as deep. LadybugDB's parser answers the deepest
#: accepted shapes in well under a second (bench/fuzz_readonly.py --depth prints the figures); 300 nested
#: lists took it 16-29 s and 1,000 crashed it.
MAX_DEPTH = 32
_MAX_EXPR_DEPTH = 2 * MAX_DEPTH
#: Nested CASE expressions: the one shape whose parse time grows exponentially in LadybugDB (16 levels 0.2 s,
#: 20 levels 1.3 s, 31 levels past 15 s).
MAX_CASE_DEPTH = 12

# Refused wherever they stand as a word (outside strings and backquotes), except as a property key after ".".
FORBIDDEN_WORDS = frozenset({
    "CREATE", "MERGE", "SET", "DELETE", "DETACH", "REMOVE", "DROP", "ALTER", "FOREACH", "COPY", "LOAD",
    "EXPORT", "IMPORT", "ATTACH", "INSTALL", "EXTENSION", "CHECKPOINT", "BEGIN", "COMMIT", "ROLLBACK",
    "TRANSACTION", "USE", "PROJECT", "MACRO", "SEQUENCE", "PROFILE", "EXPLAIN", "UPDATE", "INSERT", "GRANT",
    "REVOKE", "DENY", "TERMINATE", "START", "STOP", "ENABLE", "DISABLE", "RENAME", "TRUNCATE", "DATABASE",
    "PERIODIC", "FINISH",
})

# CALL targets (case-insensitive): catalog listings only. LadybugDB's table functions that read files
# (READ_CSV_*, READ_PARQUET, READ_NPY…), change state (PROJECT_GRAPH…) or reveal settings are left out.
CALL_ALLOWED = frozenset({
    # LadybugDB
    "SHOW_TABLES", "TABLE_INFO", "SHOW_CONNECTION", "SHOW_FUNCTIONS", "SHOW_INDEXES", "DB_VERSION",
    # Neo4j
    "DB.LABELS", "DB.RELATIONSHIPTYPES", "DB.PROPERTYKEYS", "DB.SCHEMA.VISUALIZATION",
    "DB.SCHEMA.NODETYPEPROPERTIES", "DB.SCHEMA.RELTYPEPROPERTIES",
})

# Scalar and aggregate functions (case-insensitive): LadybugDB's catalog (its SCALAR, AGGREGATE and REWRITE
# functions, less the sequence and RNG-seed functions that change state) and Neo4j's built-in functions.
FUNCTIONS_ALLOWED = frozenset("""
ABS ACOS ALL ANY ARRAY_APPEND ARRAY_CAT ARRAY_CONCAT ARRAY_CONTAINS ARRAY_COSINE_SIMILARITY ARRAY_CROSS_PRODUCT
ARRAY_DISTANCE ARRAY_DOT_PRODUCT ARRAY_EXTRACT ARRAY_HAS ARRAY_INDEXOF ARRAY_INNER_PRODUCT ARRAY_POSITION
ARRAY_PREPEND ARRAY_PUSH_BACK ARRAY_PUSH_FRONT ARRAY_SLICE ARRAY_SQUARED_DISTANCE ARRAY_VALUE ASIN ATAN ATAN2
BITSHIFT_LEFT BITSHIFT_RIGHT BITWISE_AND BITWISE_OR BITWISE_XOR BLOB CARDINALITY CAST CBRT CEIL CEILING CENTURY
COALESCE CONCAT CONCAT_WS CONTAINS COS COT COUNT_IF CURRENT_DATE CURRENT_TIMESTAMP DATE DATEPART DATETRUNC
DATE_PART DATE_TRUNC DAYNAME DECODE DEGREES DURATION ELEMENT_AT ENCODE ENDS_WITH EPOCH_MS EQUALS EVEN FACTORIAL
FLOOR GAMMA GEN_RANDOM_UUID GREATER_THAN GREATER_THAN_EQUALS GREATEST HASH IFNULL INITCAP INTERVAL IS_ACYCLIC
IS_TRAIL LAST_DAY LCASE LEAST LEFT LESS_THAN LESS_THAN_EQUALS LEVENSHTEIN LGAMMA LIST_ANY_VALUE LIST_APPEND
LIST_CAT LIST_CONCAT LIST_CONTAINS LIST_CREATION LIST_DISTINCT LIST_ELEMENT LIST_EXTRACT LIST_FILTER LIST_HAS
LIST_HAS_ALL LIST_HAS_ANY LIST_INDEXOF LIST_MAX LIST_MIN LIST_POSITION LIST_PREPEND LIST_PRODUCT LIST_REDUCE
LIST_REVERSE LIST_REVERSE_SORT LIST_SLICE LIST_SORT LIST_SUM LIST_TO_STRING LIST_TRANSFORM LIST_UNIQUE LN LOG
LOG10 LOG2 LOWER LPAD LTRIM MAKE_DATE MAP MAP_EXTRACT MAP_KEYS MAP_VALUES MD5 MONTHNAME NEGATE NODES NOT_EQUALS
OCTET_LENGTH OFFSET PI POW PREFIX PROPERTIES RADIANS RANDOM RANGE REGEXP_EXTRACT REGEXP_EXTRACT_ALL
REGEXP_FULL_MATCH REGEXP_MATCHES REGEXP_REPLACE REGEXP_SPLIT_TO_ARRAY RELATIONSHIPS RELS REPEAT REPLACE REVERSE
RIGHT ROUND RPAD RTRIM SHA256 SIGN SIN SIZE SPLIT_PART SQRT STARTS_WITH STRING STRING_SPLIT STRING_TO_ARRAY
STRUCT_EXTRACT STRUCT_PACK STR_SPLIT SUBSTR SUBSTRING SUFFIX TAN TIMESTAMP TIME_BUCKET TOLOWER TOUPPER TO_BLOB
TO_BOOL TO_DATE TO_DAYS TO_DOUBLE TO_EPOCH_MS TO_FLOAT TO_HOURS TO_INT128 TO_INT16 TO_INT32 TO_INT64 TO_INT8
TO_INTERVAL TO_MICROSECONDS TO_MILLISECONDS TO_MINUTES TO_MONTHS TO_SECONDS TO_SERIAL TO_STRING TO_TIMESTAMP
TO_UINT128 TO_UINT16 TO_UINT32 TO_UINT64 TO_UINT8 TO_UUID TO_YEARS TRIM TYPEOF UCASE UNION_EXTRACT UNION_TAG
UNION_VALUE UPPER UUID
AVG COLLECT COUNT COUNT_STAR HISTOGRAM MAX MIN PERCENTILECONT PERCENTILEDISC SUM
COST END_NODE ID KEYS LABEL LABELS LENGTH NULLIF ROWID START_NODE
ELEMENTID EXISTS HEAD LAST TAIL TYPE STARTNODE ENDNODE TOINTEGER TOFLOAT TOSTRING TOBOOLEAN TOSTRINGORNULL
TOINTEGERORNULL TOFLOATORNULL TOBOOLEANORNULL TOINTEGERLIST TOFLOATLIST TOSTRINGLIST TOBOOLEANLIST EXP E ISEMPTY
NONE SINGLE REDUCE SPLIT VALUETYPE CHAR_LENGTH CHARACTER_LENGTH NORMALIZE BTRIM ISNAN HAVERSIN STDEV STDEVP
DATETIME LOCALDATETIME LOCALTIME TIME POINT ISNOTEMPTY
""".split())

# Clause keywords; a word in this set is never read as a variable.
_CLAUSE_WORDS = frozenset({"MATCH", "OPTIONAL", "WHERE", "WITH", "UNWIND", "RETURN", "ORDER", "SKIP", "LIMIT",
                           "UNION", "CALL", "YIELD"})
_RESERVED = _CLAUSE_WORDS | frozenset({
    "AS", "AND", "OR", "XOR", "NOT", "IN", "IS", "NULL", "TRUE", "FALSE", "CASE", "WHEN", "THEN", "ELSE", "END",
    "DISTINCT", "BY", "ASC", "ASCENDING", "DESC", "DESCENDING", "STARTS", "ENDS", "CONTAINS", "ALL",
})

_BLANKS = " \t\n\r"
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_HEX = frozenset("0123456789abcdefABCDEF")
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")
_QUOTED_NAME_CHARS = _NAME_CHARS | frozenset(" -.")
_TWO_CHAR = ("<>", "<=", ">=", "=~", "..", "->", "<-")
_ONE_CHAR = frozenset("()[]{},.:|=<>+-*/%^")
_OPEN = {"(": ")", "[": "]", "{": "}"}


@dataclass(frozen=True)
class Token:
    kind: str  # name | quoted | string | number | param | punct | end
    text: str  # the source text (for string: the decoded value)
    pos: int

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "name" else ""


def _refuse(why: str, pos: Optional[int] = None) -> ReadOnlyViolation:
    where = f" (at character {pos + 1})" if pos is not None else ""
    return ReadOnlyViolation(f"read-only query refused: {why}{where}")


def tokenize(cypher: str) -> list[Token]:
    """The query's tokens, or ReadOnlyViolation for anything whose extent the engine might read differently."""
    if not isinstance(cypher, str):
        raise _refuse("the query must be text")
    if len(cypher) > MAX_QUERY_CHARS:
        raise _refuse(f"the query is longer than {MAX_QUERY_CHARS} characters")
    out: list[Token] = []
    depth = 0
    closers: list[str] = []
    i, n = 0, len(cypher)
    stop = n  # where the statement ends: the end of the text or a final ';'
    while i < n:
        ch = cypher[i]
        if ch in _BLANKS:
            i += 1
            continue
        if ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise _refuse(f"character U+{ord(ch):04X} outside a string (only printable ASCII there)", i)
        if ch == "/" and i + 1 < n and cypher[i + 1] in "/*":
            raise _refuse("comments are not accepted in console queries", i)
        if ch == ";":
            if cypher[i + 1:].strip(_BLANKS):
                raise _refuse("several statements: send one statement at a time", i)
            stop = i
            break
        start = i
        if ch in "'\"":
            value, i = _string(cypher, i)
            out.append(Token("string", value, start))
        elif ch == "`":
            j = i + 1
            while j < n and cypher[j] != "`":
                if cypher[j] not in _QUOTED_NAME_CHARS:
                    raise _refuse("a backquoted name may hold only letters, digits, '_', '-', '.' and spaces", j)
                j += 1
            if j >= n or j == i + 1:
                raise _refuse("unterminated or empty backquoted name", i)
            if j + 1 < n and cypher[j + 1] == "`":
                raise _refuse("doubled backquotes are not accepted", j)
            out.append(Token("quoted", cypher[i + 1:j], start))
            i = j + 1
        elif ch in _DIGITS or (ch == "." and i + 1 < n and cypher[i + 1] in _DIGITS):
            i = _number_end(cypher, i)
            out.append(Token("number", cypher[start:i], start))
        elif ch in _NAME_START:
            while i < n and cypher[i] in _NAME_CHARS:
                i += 1
            out.append(Token("name", cypher[start:i], start))
        elif ch == "$":
            i += 1
            if i >= n or cypher[i] not in _NAME_START:
                raise _refuse("a parameter is $ followed by a name", start)
            while i < n and cypher[i] in _NAME_CHARS:
                i += 1
            out.append(Token("param", cypher[start + 1:i], start))
        else:
            two = cypher[i:i + 2]
            if two in _TWO_CHAR:
                out.append(Token("punct", two, start))
                i += 2
            elif ch in _ONE_CHAR:
                if ch in _OPEN:
                    depth += 1
                    closers.append(_OPEN[ch])
                    if depth > MAX_DEPTH:
                        raise _refuse(f"brackets nested deeper than {MAX_DEPTH}", i)
                elif ch in ")]}":
                    if not closers or closers.pop() != ch:
                        raise _refuse(f"unbalanced {ch!r}", i)
                    depth -= 1
                out.append(Token("punct", ch, start))
                i += 1
            else:
                raise _refuse(f"character {ch!r} is not part of a read-only query", i)
        if len(out) > MAX_TOKENS:
            raise _refuse(f"more than {MAX_TOKENS} tokens")
    if closers:
        raise _refuse(f"missing {closers[-1]!r}")
    out.append(Token("end", "", stop))
    return out


def _string(s: str, i: int) -> tuple[str, int]:
    quote = s[i]
    j = i + 1
    parts: list[str] = []
    n = len(s)
    while True:
        if j >= n:
            raise _refuse("unterminated string", i)
        c = s[j]
        if c == quote:
            return "".join(parts), j + 1
        if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029":
            raise _refuse(f"control character U+{ord(c):04X} in a string (pass such text as a $parameter)", j)
        if c == "\\":
            e = s[j + 1] if j + 1 < n else ""
            if e in _ESCAPES:
                parts.append(_ESCAPES[e])
                j += 2
                continue
            width = {"u": 4, "U": 8}.get(e)
            digits = s[j + 2:j + 2 + width] if width else ""
            if width and len(digits) == width and all(d in _HEX for d in digits):
                code = int(digits, 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or code < 0x20:
                    raise _refuse(f"escape \\{e}{digits} is not a printable character", j)
                parts.append(chr(code))
                j += 2 + width
                continue
            raise _refuse("unsupported escape in a string (use \\\\ \\' \\\" \\n \\t \\r \\b \\f \\uXXXX, "
                          "or pass the text as a $parameter)", j)
        parts.append(c)
        j += 1


def _number_end(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _DIGITS:
        i += 1
    if i + 1 < n and s[i] == "." and s[i + 1] in _DIGITS:
        i += 1
        while i < n and s[i] in _DIGITS:
            i += 1
    if i < n and s[i] in "eE":
        j = i + 1
        if j < n and s[j] in "+-":
            j += 1
        if j < n and s[j] in _DIGITS:
            i = j
            while i < n and s[i] in _DIGITS:
                i += 1
    if i < n and (s[i] in _NAME_CHARS or (s[i] == "." and i + 1 < n and s[i + 1] not in ".")):
        raise _refuse("malformed number", i)
    return i


class _Parser:
    """Recursive descent over the read-only sub-grammar; raises ReadOnlyViolation on anything else."""

    def __init__(self, tokens: list[Token]):
        self.t = tokens
        self.i = 0
        self.depth = 0
        self.case_depth = 0

    # -- token helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.t[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.t[min(self.i + k, len(self.t) - 1)]

    def word(self, *words: str) -> bool:
        return self.tok.kind == "name" and self.tok.upper in words

    def punct(self, *texts: str) -> bool:
        return self.tok.kind == "punct" and self.tok.text in texts

    def advance(self) -> Token:
        tok = self.tok
        if tok.kind != "end":
            self.i += 1
        return tok

    def fail(self, expected: str):
        tok = self.tok
        got = "the end of the query" if tok.kind == "end" else repr(tok.text if tok.kind != "string" else "'…'")
        if tok.kind == "name" and tok.upper in FORBIDDEN_WORDS:
            raise _refuse(f"{tok.upper} writes to the graph, changes its schema, settings or transactions, or "
                          "touches files; the console only reads", tok.pos)
        raise _refuse(f"expected {expected}, got {got}; the console accepts one read-only statement "
                      "(MATCH, OPTIONAL MATCH, WITH, UNWIND, WHERE, RETURN, UNION, CALL of a catalog listing)",
                      tok.pos)

    def expect_word(self, word: str) -> None:
        if not self.word(word):
            self.fail(word)
        self.advance()

    def expect_punct(self, text: str) -> None:
        if not self.punct(text):
            self.fail(repr(text))
        self.advance()

    def nest(self):
        parser = self

        class _Nest:
            def __enter__(self):
                parser.depth += 1
                if parser.depth > _MAX_EXPR_DEPTH:
                    raise _refuse(f"expressions nested deeper than {_MAX_EXPR_DEPTH}", parser.tok.pos)

            def __exit__(self, *exc):
                parser.depth -= 1
        return _Nest()

    def name(self, what: str = "a name", allow_reserved: bool = False) -> str:
        tok = self.tok
        if tok.kind == "quoted":
            self.advance()
            return tok.text
        if tok.kind != "name":
            self.fail(what)
        if tok.upper in FORBIDDEN_WORDS or (not allow_reserved and tok.upper in _RESERVED):
            self.fail(what)
        self.advance()
        return tok.text

    # -- statements ------------------------------------------------------------------------------
    def statement(self) -> None:
        self.single_query()
        while self.word("UNION"):
            self.advance()
            if self.word("ALL"):
                self.advance()
            self.single_query()
        if self.tok.kind != "end":
            self.fail("the end of the query")

    def single_query(self) -> None:
        if self.word("CALL"):
            self.call()
            if self.tok.kind == "end" or self.word("UNION"):
                return  # a standalone catalog CALL
        elif not self.word("MATCH", "OPTIONAL", "UNWIND", "WITH", "RETURN"):
            self.fail("MATCH, OPTIONAL MATCH, WITH, UNWIND, CALL or RETURN")
        while True:
            if self.word("MATCH"):
                self.advance()
                self.match_body()
            elif self.word("OPTIONAL"):
                self.advance()
                self.expect_word("MATCH")
                self.match_body()
            elif self.word("UNWIND"):
                self.advance()
                self.expr()
                self.expect_word("AS")
                self.name("a variable")
            elif self.word("WITH"):
                self.advance()
                self.projection()
                if self.word("WHERE"):
                    self.advance()
                    self.expr()
            elif self.word("CALL"):
                self.call()
            elif self.word("RETURN"):
                self.advance()
                self.projection()
                return
            else:
                self.fail("MATCH, OPTIONAL MATCH, WITH, UNWIND, CALL or RETURN")

    def call(self) -> None:
        self.expect_word("CALL")
        parts = [self.name("a procedure name", allow_reserved=True)]
        while self.punct("."):
            self.advance()
            parts.append(self.name("a procedure name", allow_reserved=True))
        target = ".".join(parts).upper()
        if target not in CALL_ALLOWED:
            raise _refuse(f"CALL {'.'.join(parts)} is not one of the catalog listings the console allows "
                          f"({', '.join(sorted(x.lower() for x in CALL_ALLOWED))})", self.t[self.i - 1].pos)
        self.expect_punct("(")
        if not self.punct(")"):
            self.expr()
            while self.punct(","):
                self.advance()
                self.expr()
        self.expect_punct(")")
        if self.word("YIELD"):
            self.advance()
            while True:
                self.name("a column")
                if self.word("AS"):
                    self.advance()
                    self.name("a variable")
                if not self.punct(","):
                    break
                self.advance()
            if self.word("WHERE"):
                self.advance()
                self.expr()

    def match_body(self) -> None:
        self.pattern()
        while self.punct(","):
            self.advance()
            self.pattern()
        if self.word("WHERE"):
            self.advance()
            self.expr()

    def projection(self) -> None:
        if self.word("DISTINCT"):
            self.advance()
        if self.punct("*"):
            self.advance()
        else:
            self.projection_item()
        while self.punct(","):
            self.advance()
            self.projection_item()
        if self.word("ORDER"):
            self.advance()
            self.expect_word("BY")
            while True:
                self.expr()
                if self.word("ASC", "ASCENDING", "DESC", "DESCENDING"):
                    self.advance()
                if not self.punct(","):
                    break
                self.advance()
        if self.word("SKIP"):
            self.advance()
            self.expr()
        if self.word("LIMIT"):
            self.advance()
            self.expr()

    def projection_item(self) -> None:
        self.expr()
        if self.word("AS"):
            self.advance()
            self.name("a column name")

    # -- patterns --------------------------------------------------------------------------------
    def pattern(self) -> None:
        if (self.tok.kind in ("name", "quoted") and self.peek().kind == "punct" and self.peek().text == "="):
            self.name("a path variable")
            self.advance()
        self.pattern_element()

    def pattern_element(self) -> int:
        """A node, then (relationship, node)*; returns how many relationships it had."""
        with self.nest():
            self.node()
            rels = 0
            while self.punct("-", "<-"):
                self.relationship()
                self.node()
                rels += 1
            return rels

    def node(self) -> None:
        self.expect_punct("(")
        if self.tok.kind in ("name", "quoted") and not self.punct(":"):
            self.name("a variable")
        self.labels()
        if self.punct("{"):
            self.map_literal()
        self.expect_punct(")")

    def labels(self) -> None:
        if not self.punct(":"):
            return
        self.advance()
        self.name("a label", allow_reserved=True)
        while self.punct("|", ":"):
            self.advance()
            if self.punct(":"):
                self.advance()
            self.name("a label", allow_reserved=True)

    def relationship(self) -> None:
        self.advance()  # "-" or "<-"
        if self.punct("["):
            self.advance()
            if self.tok.kind in ("name", "quoted"):
                self.name("a variable")
            self.labels()
            if self.punct("*"):
                self.advance()
                if self.word("SHORTEST"):
                    self.advance()
                elif self.word("ALL") and self.peek().kind == "name" and self.peek().upper == "SHORTEST":
                    self.advance()
                    self.advance()
                if self.tok.kind == "number":
                    self.advance()
                if self.punct(".."):
                    self.advance()
                    if self.tok.kind == "number":
                        self.advance()
            if self.punct("{"):
                self.map_literal()
            self.expect_punct("]")
        if self.punct("->"):
            self.advance()
        elif self.punct("-"):
            self.advance()
        else:
            self.fail("'-' or '->' closing a relationship")

    # -- expressions -----------------------------------------------------------------------------
    def expr(self) -> None:
        with self.nest():
            self.xor_expr()
            while self.word("OR"):
                self.advance()
                self.xor_expr()

    def xor_expr(self) -> None:
        self.and_expr()
        while self.word("XOR"):
            self.advance()
            self.and_expr()

    def and_expr(self) -> None:
        self.not_expr()
        while self.word("AND"):
            self.advance()
            self.not_expr()

    def not_expr(self) -> None:
        while self.word("NOT"):
            self.advance()
        self.comparison()

    def comparison(self) -> None:
        self.additive()
        while True:
            if self.punct("=", "<>", "<", ">", "<=", ">=", "=~"):
                self.advance()
                self.additive()
            elif self.word("IS"):
                self.advance()
                if self.word("NOT"):
                    self.advance()
                self.expect_word("NULL")
            elif self.word("IN"):
                self.advance()
                self.additive()
            elif self.word("NOT") and self.peek().upper == "IN":
                self.advance()
                self.advance()
                self.additive()
            elif self.word("STARTS", "ENDS"):
                self.advance()
                self.expect_word("WITH")
                self.additive()
            elif self.word("CONTAINS"):
                self.advance()
                self.additive()
            else:
                return

    def additive(self) -> None:
        self.multiplicative()
        while self.punct("+", "-"):
            self.advance()
            self.multiplicative()

    def multiplicative(self) -> None:
        self.power()
        while self.punct("*", "/", "%"):
            self.advance()
            self.power()

    def power(self) -> None:
        self.unary()
        while self.punct("^"):
            self.advance()
            self.unary()

    def unary(self) -> None:
        signs = 0
        while self.punct("-", "+"):
            self.advance()
            signs += 1
            if signs > MAX_DEPTH:
                raise _refuse("too many signs in a row", self.tok.pos)
        self.postfix()

    def postfix(self) -> None:
        self.atom()
        while True:
            if self.punct("."):
                self.advance()
                if self.tok.kind == "name":
                    self.advance()  # any word is a property key after "."
                else:
                    self.name("a property key")
            elif self.punct("["):
                with self.nest():
                    self.advance()
                    if self.punct(".."):
                        self.advance()
                        self.expr()
                    else:
                        self.expr()
                        if self.punct(".."):
                            self.advance()
                            if not self.punct("]"):
                                self.expr()
                    self.expect_punct("]")
            else:
                return

    def atom(self) -> None:
        tok = self.tok
        if tok.kind in ("number", "string", "param"):
            self.advance()
            return
        if tok.kind == "punct":
            if tok.text == "(":
                self.parenthesised()
                return
            if tok.text == "[":
                self.list_like()
                return
            if tok.text == "{":
                self.map_literal()
                return
            self.fail("an expression")
        if tok.kind == "quoted":
            self.advance()
            return
        if tok.kind != "name":
            self.fail("an expression")
        word = tok.upper
        if word in ("TRUE", "FALSE", "NULL"):
            self.advance()
            return
        if word == "CASE":
            self.case()
            return
        if word in ("EXISTS", "COUNT") and self.peek().kind == "punct" and self.peek().text == "{":
            self.advance()
            self.subquery()
            return
        if self.peek().kind == "punct" and self.peek().text in ("(", "."):
            if self.function_call():
                return
        self.name("an expression")

    def function_call(self) -> bool:
        """A call ``name(.name)*( … )`` from the allow-list; False (nothing consumed) when this is not a call."""
        j = self.i + 1
        while self.t[j].kind == "punct" and self.t[j].text == "." and self.t[j + 1].kind == "name":
            j += 2
        if not (self.t[j].kind == "punct" and self.t[j].text == "("):
            return False
        name = "".join(t.text for t in self.t[self.i:j]).upper()
        if name not in FUNCTIONS_ALLOWED:
            if name in FORBIDDEN_WORDS or name.split(".")[0] in FORBIDDEN_WORDS:
                self.fail("an expression")
            raise _refuse(f"function {''.join(t.text for t in self.t[self.i:j])}() is not on the console's list "
                          "of read-only functions", self.tok.pos)
        self.i = j
        with self.nest():
            self.expect_punct("(")
            if self.punct(")"):
                self.advance()
                return True
            if self.punct("*"):
                self.advance()
                self.expect_punct(")")
                return True
            if self.word("DISTINCT"):
                self.advance()
            self.argument()
            while self.punct(","):
                self.advance()
                self.argument()
            self.expect_punct(")")
        return True

    def argument(self) -> None:
        if self.tok.kind == "name" and self.peek().kind == "punct" and self.peek().text == "->":
            self.name("a lambda variable")  # LadybugDB's list_transform(l, x -> …)
            self.advance()
        self.expr()

    def parenthesised(self) -> None:
        """``( expr )`` or a pattern used as a predicate, e.g. ``WHERE (a)-[:NEXT]->(b)``."""
        save = self.i
        try:
            if self.pattern_element() > 0:
                return
        except ReadOnlyViolation:
            pass
        self.i = save
        with self.nest():
            self.expect_punct("(")
            self.expr()
            self.expect_punct(")")

    def list_like(self) -> None:
        with self.nest():
            self.expect_punct("[")
            if self.punct("]"):
                self.advance()
                return
            if (self.tok.kind in ("name", "quoted") and self.peek().kind == "name" and self.peek().upper == "IN"
                    and self.tok.upper not in _RESERVED):
                self.name("a variable")  # [x IN list WHERE … | …]
                self.advance()
                self.expr()
                if self.word("WHERE"):
                    self.advance()
                    self.expr()
                if self.punct("|"):
                    self.advance()
                    self.expr()
                self.expect_punct("]")
                return
            if self.punct("("):
                save = self.i
                try:
                    self.pattern_comprehension()
                    return
                except ReadOnlyViolation:
                    self.i = save
            self.expr()
            while self.punct(","):
                self.advance()
                self.expr()
            self.expect_punct("]")

    def pattern_comprehension(self) -> None:
        if self.pattern_element() == 0:
            self.fail("a relationship")
        if self.word("WHERE"):
            self.advance()
            self.expr()
        self.expect_punct("|")
        self.expr()
        self.expect_punct("]")

    def map_literal(self) -> None:
        with self.nest():
            self.expect_punct("{")
            if self.punct("}"):
                self.advance()
                return
            while True:
                self.name("a key", allow_reserved=True)
                self.expect_punct(":")
                self.expr()
                if not self.punct(","):
                    break
                self.advance()
            self.expect_punct("}")

    def case(self) -> None:
        self.case_depth += 1
        if self.case_depth > MAX_CASE_DEPTH:
            raise _refuse(f"CASE expressions nested deeper than {MAX_CASE_DEPTH}", self.tok.pos)
        try:
            self._case()
        finally:
            self.case_depth -= 1

    def _case(self) -> None:
        with self.nest():
            self.expect_word("CASE")
            if not self.word("WHEN"):
                self.expr()
            if not self.word("WHEN"):
                self.fail("WHEN")
            while self.word("WHEN"):
                self.advance()
                self.expr()
                self.expect_word("THEN")
                self.expr()
            if self.word("ELSE"):
                self.advance()
                self.expr()
            self.expect_word("END")

    def subquery(self) -> None:
        """The braces of EXISTS { … } / COUNT { … }: a pattern with WHERE, or reading clauses."""
        with self.nest():
            self.expect_punct("{")
            if self.word("MATCH", "OPTIONAL", "WITH", "UNWIND"):
                while not self.punct("}"):
                    if self.word("MATCH"):
                        self.advance()
                        self.match_body()
                    elif self.word("OPTIONAL"):
                        self.advance()
                        self.expect_word("MATCH")
                        self.match_body()
                    elif self.word("UNWIND"):
                        self.advance()
                        self.expr()
                        self.expect_word("AS")
                        self.name("a variable")
                    elif self.word("WITH"):
                        self.advance()
                        self.projection()
                        if self.word("WHERE"):
                            self.advance()
                            self.expr()
                    elif self.word("RETURN"):
                        self.advance()
                        self.projection()
                        break
                    else:
                        self.fail("MATCH, WITH, UNWIND, RETURN or '}'")
            else:
                self.match_body()
            self.expect_punct("}")


def check_read_only(cypher: str) -> str:
    """The query as it will be sent (a trailing ``;`` dropped), or ReadOnlyViolation saying why not.

    Accepts one statement of the read-only sub-grammar described in this module's docstring.
    """
    tokens = tokenize(cypher)
    if len(tokens) == 1:
        raise _refuse("the query is empty")
    _Parser(tokens).statement()
    return cypher[:tokens[-1].pos]
