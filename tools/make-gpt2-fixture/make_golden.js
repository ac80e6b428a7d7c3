// Usage: node make_golden.js <gpt-3-encoder package dir> <out golden.json>
// Encodes every corpus string with gpt-3-encoder's Encoder.js and writes
// {"source": ..., "cases": [{"text": ..., "ids": [...]}]}.
'use strict';
const fs = require('fs');
const path = require('path');
const { corpus } = require('./corpus.js');

const [pkgDir, outPath] = process.argv.slice(2);
const { encode, decode } = require(path.resolve(pkgDir, 'Encoder.js'));
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'))).version;

const cases = corpus.map((text) => {
  const ids = encode(text);
  if (ids.some((id) => id === undefined)) throw new Error('undefined id for ' + JSON.stringify(text));
  // Encoder.js decode() uses a default TextDecoder, which drops a leading BOM.
  if (decode(ids) !== text.replace(/^\ufeff/, '')) throw new Error('no round trip for ' + JSON.stringify(text));
  return { text, ids };
});
const golden = {
  source: 'npm gpt-3-encoder@' + version + ' Encoder.js encode(), node ' + process.version,
  cases,
};
fs.writeFileSync(outPath, JSON.stringify(golden, null, 0).replace(/\{"text"/g, '\n{"text"') + '\n');
console.log('wrote ' + cases.length + ' cases to ' + outPath);
