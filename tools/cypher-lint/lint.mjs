// Runs Neo4j's own Cypher front end (@neo4j-cypher/language-support) over named queries.
//
// stdin:  a JSON object {name: query}
// stdout: a JSON object {name: [diagnostic, ...]}, where a diagnostic is
//         {severity: "error"|"warning"|"information"|"hint", message, line, column,
//          start, end, undefined_parameter}
//         line/column are 1-based; start/end are character offsets into the query.
//
// Functions are checked against the catalogue of built-in functions of a Neo4j 5 server that ships
// inside the pinned package (its test fixtures); without a catalogue the front end accepts any
// function name, so an embedded-only function such as to_int64() would pass unnoticed.
// Parameters are not declared: "Parameter $x is not defined." comes back flagged
// undefined_parameter: true, for the caller to ignore.
//
// Usage: node lint.mjs [--cypher-version "CYPHER 5"] < queries.json

import { readFileSync } from 'node:fs';
import { lintCypherQuery, isNotParamError } from '@neo4j-cypher/language-support';

const SEVERITY = { 1: 'error', 2: 'warning', 3: 'information', 4: 'hint' };
const CATALOGUE = new URL(
  './node_modules/@neo4j-cypher/language-support/dist/esm/project/language-support/src/tests/testData.js',
  import.meta.url,
);

function argValue(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function builtInFunctions() {
  let mod;
  try {
    mod = await import(CATALOGUE.href);
  } catch (err) {
    throw new Error(`the Neo4j function catalogue was not found at ${CATALOGUE.pathname} ` +
      `(is the pinned @neo4j-cypher/language-support installed?): ${err.message}`);
  }
  const byVersion = mod.testData?.mockSchema?.functions;
  if (!byVersion || !byVersion['CYPHER 5']) {
    throw new Error('the Neo4j function catalogue has an unexpected shape');
  }
  // Plugins (APOC, GDS) are not part of a plain Neo4j server: keep built-ins only.
  const out = {};
  for (const [version, registry] of Object.entries(byVersion)) {
    out[version] = Object.fromEntries(Object.entries(registry).filter(([, f]) => f.isBuiltIn === true));
  }
  return out;
}

function diagnosticOf(d) {
  return {
    severity: SEVERITY[d.severity] ?? String(d.severity),
    message: d.message,
    line: d.range.start.line + 1,
    column: d.range.start.character + 1,
    start: d.offsets?.start ?? null,
    end: d.offsets?.end ?? null,
    undefined_parameter: !isNotParamError(d),
  };
}

async function main() {
  const input = readFileSync(0, 'utf8');
  let queries;
  try {
    queries = JSON.parse(input);
  } catch (err) {
    throw new Error(`stdin is not JSON: ${err.message}`);
  }
  if (queries === null || typeof queries !== 'object' || Array.isArray(queries)) {
    throw new Error('stdin must be a JSON object {name: query}');
  }
  const schema = {
    functions: await builtInFunctions(),
    defaultLanguage: argValue('--cypher-version', 'CYPHER 5'),
  };
  const result = {};
  for (const [name, query] of Object.entries(queries)) {
    if (typeof query !== 'string') {
      throw new Error(`query ${JSON.stringify(name)} is not a string`);
    }
    result[name] = lintCypherQuery(query, schema).diagnostics.map(diagnosticOf);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  process.stderr.write(`cypher-lint: ${err.message}\n`);
  process.exit(2);
});
