"""The ``import`` section of a pipeline config: a retailer's own tables -> the raw contracts.

Each target (``purchases``, ``points``, ``demographics``) names one input table and says
how to compute every contract column from it, as a Spark SQL expression over the input's
columns (a column name is the simplest expression; quote names with spaces or odd
characters in backticks: ```Customer ID```)::

    import:
      purchases:
        input: {uri: exports/online_retail.csv, format: csv}
        user_id: "`Customer ID`"
        event_time: InvoiceDate
        event_time_format: "yyyy-MM-dd HH:mm:ss"   # a Spark datetime pattern, for text
        event_time_zone: Europe/London             # zone of naive times
        amount: "abs(Quantity * Price)"
        quantity: "abs(Quantity)"
        status: "CASE WHEN Invoice LIKE 'C%' THEN 'cancel' ELSE 'purchase' END"
        genre:
          rules:                                   # first match wins
            - {column: Description, keywords: [mug, cup, teapot], genre: home/kitchen}
            - {column: Description, regex: "(?i)christmas|xmas", genre: seasonal/christmas}
          fallback: other/misc                     # omitted: the row is dropped as no_genre
        merge_line_items: true
        drop:                                      # reason: SQL condition, in this order
          null_customer_id: "`Customer ID` IS NULL"

The genre is one of ``expression`` (a category path), ``lookup`` (a second table, joined
on a key: ``{input: {...}, key: StockCode, genre: category, match: StockCode}``) or ``rules``,
each with an optional ``fallback``. A log may be a list of such mappings (parts), whose
rows are unioned, e.g. one points part per discount column.

Tables used more than once, or joined, are named once under ``tables`` and then given by
name (``input: transactions``). The named tables are also Spark SQL views for the
``query`` of the campaign seeds and the campaign registry, and for ``query`` task rules::

    import:
      tables:
        orders: {uri: exports/orders.parquet, format: parquet}
        mailings: {uri: exports/mailings.csv}
      purchases: {input: orders, ...}
      campaign_seeds:       # -> campaign_id, user_id, label (1 seed, 0 explicit negative)
        query: "SELECT campaign AS campaign_id, customer AS user_id, 1 AS label
                FROM mailings WHERE responded AND sent <= DATE '${window.end}'"
      campaign_registry:    # -> campaign_id, name, status, segment_size[, score_threshold,
        query: "..."        #    exclude_campaigns]; may read the landed seeds: campaign_seeds

``${window.start}`` and ``${window.end}`` in a query are the feature window's first and last
dates (``YYYY-MM-DD``), so a query follows ``--set window.end=...``; ``${storage.root}``
may start any URI of the section. Parsed here, run by
``jobs/ingest.py`` and ``jobs/tasks.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.identifiers import MAX_LENGTH, shown

INPUT_FORMATS = ("csv", "parquet", "jsonl")
LOG_COLUMNS = {"purchases": ("user_id", "event_time", "genre", "amount", "quantity", "status"),
               "points": ("user_id", "event_time", "point_type", "points", "service")}
REQUIRED = {"purchases": ("user_id", "event_time", "amount"),
            "points": ("user_id", "event_time", "point_type", "points")}
DEFAULTS = {"quantity": "1", "status": "'purchase'", "service": "NULL"}
_REASON_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,%d}\Z" % (MAX_LENGTH - 1))  # \Z: not "x\n"
PLACEHOLDER_RE = re.compile(r"\$\{([^}]*)\}")
PLACEHOLDERS = ("window.start", "window.end")
QUERY_TABLES = ("campaign_seeds", "campaign_registry")


@dataclass(frozen=True)
class InputTable:
    uri: str
    format: str = "csv"
    options: tuple[tuple[str, str], ...] = ()  # Spark reader options, e.g. sep, encoding
    name: str = ""  # the ``import.tables`` entry it was given by, if any


def substitute(query: str, values: dict[str, str]) -> str:
    """``${window.end}`` etc. replaced by ``values``; the parser has refused any other."""
    return PLACEHOLDER_RE.sub(lambda m: values[m.group(1).strip()], query)


def check_query(r, value, where: str) -> str:
    """A query's text, with every ``${...}`` among :data:`PLACEHOLDERS`."""
    text = value if isinstance(value, str) else ""
    if not text.strip():
        r.problem(where, "is required: a Spark SQL SELECT over the import.tables views")
    for name in PLACEHOLDER_RE.findall(text):
        if name.strip() not in PLACEHOLDERS:
            r.problem(where, f"${{{name}}} is not a known placeholder; use "
                             f"{', '.join('${' + p + '}' for p in PLACEHOLDERS)}")
    return text


@dataclass(frozen=True)
class GenreRule:
    column: str  # an expression over the input's columns, usually a text column
    regex: str  # a Java regular expression (``keywords`` become one)
    genre: str


@dataclass(frozen=True)
class GenreMapping:
    expression: str | None = None
    lookup: InputTable | None = None
    lookup_key: str = ""  # column of the lookup table
    lookup_genre: str = ""  # expression over the lookup table's columns
    match: str = ""  # expression over the main input, compared with lookup_key
    rules: tuple[GenreRule, ...] = ()
    fallback: str | None = None


@dataclass(frozen=True)
class LogImport:
    input: InputTable
    columns: tuple[tuple[str, str], ...]  # (contract column, expression); genre apart
    genre: GenreMapping | None = None
    event_time_format: str | None = None
    event_time_zone: str | None = None  # None: raw.timestamp_timezone
    merge_line_items: bool = False
    drop: tuple[tuple[str, str], ...] = ()  # (reason, condition)

    def expression(self, column: str) -> str:
        return dict(self.columns)[column]


@dataclass(frozen=True)
class DemographicsImport:
    input: InputTable
    user_id: str
    fields: tuple[tuple[str, str], ...]  # (configured field, expression)


@dataclass(frozen=True)
class ImportConfig:
    """Each log is one mapping or a list of them (parts), whose rows are unioned: e.g. one
    points row per discount column of a line, plus the rows of a second table."""

    purchases: tuple[LogImport, ...] = ()
    points: tuple[LogImport, ...] = ()
    demographics: DemographicsImport | None = None
    tables: tuple[tuple[str, InputTable], ...] = ()  # named inputs, also SQL views
    queries: tuple[tuple[str, str], ...] = ()  # (campaign_seeds | campaign_registry, SQL)

    @property
    def enabled(self) -> bool:
        return bool(self.purchases or self.points or self.demographics or self.tables
                    or self.queries)

    def query(self, name: str) -> str | None:
        return dict(self.queries).get(name)


def _input(r, value, where: str, uri, tables: dict | None = None) -> InputTable | None:
    if isinstance(value, str) and tables is not None:
        if value not in tables:
            r.problem(where, f"{value!r} is not among import.tables "
                             f"({', '.join(tables) or 'none defined'})")
            return None
        return tables[value]
    m = r.mapping(value, where, ("uri", "format", "options"))
    if not m:
        r.problem(where, "is required: {uri: ..., format: csv|parquet|jsonl}, or the name "
                         "of an import.tables entry")
        return None
    raw_uri = r.get(m, "uri", where, str, required=True)
    options = r.get(m, "options", where, dict, {})
    return InputTable(uri=uri(raw_uri, f"{where}.uri") if raw_uri else "",
                      format=r.choice(m, "format", where, INPUT_FORMATS, "csv"),
                      options=tuple(sorted((str(k), str(v)) for k, v in options.items())))


def _genre(r, value, where: str, uri, tables: dict) -> GenreMapping | None:
    m = r.mapping(value, where, ("expression", "lookup", "rules", "fallback"))
    kinds = [k for k in ("expression", "lookup", "rules") if m.get(k) is not None]
    if len(kinds) != 1:
        r.problem(where, f"give exactly one of expression, lookup, rules (got "
                         f"{', '.join(kinds) or 'none'})")
        return None
    fallback = r.get(m, "fallback", where, str, None)
    if "lookup" in kinds:
        lm = r.mapping(m["lookup"], f"{where}.lookup", ("input", "key", "genre", "match"))
        return GenreMapping(lookup=_input(r, lm.get("input"), f"{where}.lookup.input", uri,
                                          tables),
                            lookup_key=r.get(lm, "key", f"{where}.lookup", str, "",
                                             required=True),
                            lookup_genre=r.get(lm, "genre", f"{where}.lookup", str, "",
                                               required=True),
                            match=r.get(lm, "match", f"{where}.lookup", str, "", required=True),
                            fallback=fallback)
    if "expression" in kinds:
        return GenreMapping(expression=r.get(m, "expression", where, str), fallback=fallback)
    rules = []
    for i, rule in enumerate(r.sequence(m["rules"], f"{where}.rules")):
        at = f"{where}.rules[{i}]"
        rm = r.mapping(rule, at, ("column", "regex", "keywords", "genre"))
        if (rm.get("regex") is None) == (rm.get("keywords") is None):
            r.problem(at, "give exactly one of regex, keywords")
            continue
        if rm.get("keywords") is not None:
            words = [str(w) for w in r.get(rm, "keywords", at, list, [])]
            regex = "(?i)\\b(" + "|".join(re.escape(w) for w in words) + ")\\b"
        else:
            regex = r.get(rm, "regex", at, str, "")
            try:
                re.compile(regex.replace("(?i)", ""))
            except re.error as exc:
                r.problem(f"{at}.regex", f"not a valid regular expression: {exc}")
        rules.append(GenreRule(column=r.get(rm, "column", at, str, "", required=True),
                               regex=regex, genre=r.get(rm, "genre", at, str, "",
                                                        required=True)))
    return GenreMapping(rules=tuple(rules), fallback=fallback)


def _log(r, value, where: str, log: str, uri, tables: dict) -> LogImport | None:
    columns = LOG_COLUMNS[log]
    extra = ("input", "event_time_format", "event_time_zone", "merge_line_items", "drop")
    m = r.mapping(value, where, columns + extra)
    if not m:
        return None
    table = _input(r, m.get("input"), f"{where}.input", uri, tables)
    for column in REQUIRED[log]:
        r.get(m, column, where, str, required=True)
    expressions = tuple((c, str(m.get(c) or DEFAULTS.get(c, "NULL"))) for c in columns
                        if c != "genre")
    genre = None
    if log == "purchases":
        if m.get("genre") is None:
            r.problem(f"{where}.genre", "is required: an expression, a lookup or rules")
        else:
            genre = _genre(r, m["genre"], f"{where}.genre", uri, tables)
    drop = r.get(m, "drop", where, dict, {})
    for reason in drop:
        if not _REASON_RE.match(str(reason)):
            r.problem(f"{where}.drop.{reason}", "a reason is lower_snake_case")
    zone = r.timezone(m, "event_time_zone", where, None) if m.get("event_time_zone") else None
    return LogImport(input=table, columns=expressions, genre=genre,
                     event_time_format=r.get(m, "event_time_format", where, str, None),
                     event_time_zone=zone,
                     merge_line_items=r.get(m, "merge_line_items", where, bool, False),
                     drop=tuple((str(k), str(v)) for k, v in drop.items()))


def parse_import(r, value, demographic_fields: tuple[str, ...], uri) -> ImportConfig:
    """The ``import`` section, read with the config's field reader ``r``; ``uri`` resolves a
    relative path against the storage root's base directory."""
    m = r.mapping(value, "import", ("tables", "purchases", "points", "demographics",
                                    *QUERY_TABLES))
    if not m:
        return ImportConfig()
    tables: dict[str, InputTable] = {}
    for name, spec in r.get(m, "tables", "import", dict, {}).items():
        where = f"import.tables.{name}"
        if not _TABLE_RE.match(str(name)) or name in QUERY_TABLES:
            if not (str(name).isascii() and str(name).isprintable()) or len(str(name)) > 60:
                where = f"import.tables[{shown(name)}]"  # escaped: it may hold a newline
            r.problem(where, f"a table name is a SQL identifier (letters, digits, _; at most "
                             f"{MAX_LENGTH}) other than {' and '.join(QUERY_TABLES)}")
            continue
        table = _input(r, spec, where, uri)
        if table is not None:
            tables[str(name)] = InputTable(table.uri, table.format, table.options, str(name))
    queries = []
    for name in QUERY_TABLES:
        if m.get(name) is not None:
            qm = r.mapping(m[name], f"import.{name}", ("query",))
            queries.append((name, check_query(r, qm.get("query"), f"import.{name}.query")))
    demographics = None
    if m.get("demographics") is not None:
        where = "import.demographics"
        dm = r.mapping(m["demographics"], where, ("input", "user_id", "fields"))
        fields = r.get(dm, "fields", where, dict, {})
        unknown = sorted(set(fields) - set(demographic_fields))
        if unknown:
            r.problem(f"{where}.fields", f"{', '.join(unknown)} not among demographics' "
                                         f"fields ({', '.join(demographic_fields)})")
        demographics = DemographicsImport(
            input=_input(r, dm.get("input"), f"{where}.input", uri, tables),
            user_id=r.get(dm, "user_id", where, str, "", required=True),
            fields=tuple((str(k), str(v)) for k, v in fields.items()))
    return ImportConfig(purchases=_parts(r, m.get("purchases"), "purchases", uri, tables),
                        points=_parts(r, m.get("points"), "points", uri, tables),
                        demographics=demographics, tables=tuple(tables.items()),
                        queries=tuple(queries))


def _parts(r, value, log: str, uri, tables: dict) -> tuple[LogImport, ...]:
    """One mapping, or a list of them (``import.points[1]`` …)."""
    if value is None:
        return ()
    if isinstance(value, list):
        parts = [_log(r, v, f"import.{log}[{i}]", log, uri, tables)
                 for i, v in enumerate(value)]
    else:
        parts = [_log(r, value, f"import.{log}", log, uri, tables)]
    return tuple(p for p in parts if p is not None)


def _input_dict(t: InputTable, by_name: bool = True) -> dict | str:
    if t.name and by_name:
        return t.name
    return {"uri": t.uri, "format": t.format, **({"options": dict(t.options)} if t.options else {})}


def import_to_dict(cfg: ImportConfig) -> dict:
    """The section in the form :func:`parse_import` reads back (keywords as their regex)."""
    out: dict = {}
    if cfg.tables:
        out["tables"] = {name: _input_dict(t, by_name=False) for name, t in cfg.tables}
    for log in ("purchases", "points"):
        parts = [_log_dict(item) for item in getattr(cfg, log)]
        if parts:
            out[log] = parts[0] if len(parts) == 1 else parts
    if cfg.demographics is not None:
        out["demographics"] = {"input": _input_dict(cfg.demographics.input),
                               "user_id": cfg.demographics.user_id,
                               "fields": dict(cfg.demographics.fields)}
    for name, query in cfg.queries:
        out[name] = {"query": query}
    return out


def _log_dict(item: LogImport) -> dict:
    """One mapping in the form :func:`_log` reads back."""
    d: dict = {"input": _input_dict(item.input), **dict(item.columns)}
    if item.genre is not None:
        g = item.genre
        if g.expression is not None:
            genre: dict = {"expression": g.expression}
        elif g.lookup is not None:
            genre = {"lookup": {"input": _input_dict(g.lookup), "key": g.lookup_key,
                                "genre": g.lookup_genre, "match": g.match}}
        else:
            genre = {"rules": [{"column": r.column, "regex": r.regex, "genre": r.genre}
                               for r in g.rules]}
        if g.fallback is not None:
            genre["fallback"] = g.fallback
        d["genre"] = genre
    for key in ("event_time_format", "event_time_zone"):
        if getattr(item, key) is not None:
            d[key] = getattr(item, key)
    d["merge_line_items"] = item.merge_line_items
    if item.drop:
        d["drop"] = dict(item.drop)
    return d
