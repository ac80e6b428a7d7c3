// Corpus for the GPT-2 golden fixture (tests/fixtures/gpt2/golden.json). Each string is
// encoded by gpt-3-encoder@1.1.4 (make_golden.js). Unicode escapes keep the file ASCII.
'use strict';

const corpus = [
  // spec §7 test vectors and §1.4 templates
  '\n\n', ' gaze\n\n', 'face', ' face', 'person', 'What is in this image?',
  ' What is in this image?', 'How many people are in the image?',
  '\n\nShort caption:', '\n\nCaption:', '\n\nQuestion:', '\n\nAnswer:', '\n\nDetect:',
  '\n\nPoint:',
  // ASCII sentences
  'Hello world! The quick brown fox.',
  'The quick brown fox jumps over the lazy dog.',
  'A man riding a horse on a beach at sunset, with mountains in the background.',
  'Is there a cat in this picture? If so, what color is it?',
  'GPT-2 uses byte-level BPE; it never needs an <unk> token.',
  'def main():\n    return 0\n',
  'for (int i = 0; i < n; ++i) { sum += a[i]; }',
  'https://example.com/path?query=1&x=y#frag',
  'user@example.org',
  'CamelCaseIdentifier and snake_case_identifier and SCREAMING_CASE',
  // contractions (case-sensitive in the regex)
  "I'm sure it's fine, you're right, we've seen it, she'll go, he'd know, don't.",
  "IT'S LOUD, WE'RE HERE, I'LL GO",
  "''s 's 't 're 've 'm 'll 'd 'x",
  "rock 'n' roll", "O'Neil's dog's bone", "\u2019s curly apostrophe\u2019s",
  // numbers
  '0', '42', '3.14159', '1,000,000', '2024-08-26', '12:30pm', '+1 (555) 123-4567',
  '1234567890123456789012345678901234567890', 'x1y2z3', '1st 2nd 3rd 4th',
  // punctuation runs
  '!!!???...', '...', '\u2014\u2014', '-->', '<<<>>>', '{{{}}}', '$$$ %%% ^^^', '#!/bin/sh',
  '"quoted" \'single\' `back`', '(a)[b]{c}', ':-) ;-) :P',
  // whitespace
  'two  spaces', 'three   spaces', 'ten          spaces', 'tab\there', 'tabs\t\t\tx',
  'new\nline', 'crlf\r\nline', '\n', '\n\n\n\n', ' ', '  ', '   ', '\t', ' \n ', 'a \n b',
  '   leading spaces', 'trailing spaces   ', ' both ', '\n\nleading newlines',
  'trailing newline\n', 'mixed \t\n whitespace \t end \t', '\f\vform feed vertical tab',
  'nbsp\u00a0here', 'ideographic\u3000space', 'en\u2002em\u2003thin\u2009space',
  'line\u2028sep\u2029para', 'nel\u0085next', 'bom\ufeffbom', '\ufeffleading bom',
  'mongolian\u180evowel sep', 'ogham\u1680space',
  // JS \s includes U+FEFF and excludes U+0085; Unicode White_Space is the other way round.
  // Next to spaces the pieces differ (see tests/tokenizer: JsWhitespaceDivergences).
  'x \ufeffy', 'x \u0085y', 'a \u0085\u0085 b', 'end \ufeff', 'x \u180ey',
  // accented Latin
  'caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade', '\u00dcber Stra\u00dfe', 'Espa\u00f1a ma\u00f1ana',
  '\u0141\u00f3d\u017a \u017b\u00f3\u0142w', 'S\u00e3o Paulo', '\u00c5ngstr\u00f6m',
  // Greek, Cyrillic
  '\u039a\u03b1\u03bb\u03b7\u03bc\u03ad\u03c1\u03b1 \u03ba\u03cc\u03c3\u03bc\u03b5',
  '\u03b1\u03b2\u03b3 \u0394\u03a3\u03a9',
  '\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!',
  '\u0427\u0442\u043e \u043d\u0430 \u044d\u0442\u043e\u0439 \u043a\u0430\u0440\u0442\u0438\u043d\u043a\u0435?',
  // CJK
  '\u4f60\u597d\uff0c\u4e16\u754c\uff01', '\u3053\u3093\u306b\u3061\u306f\u4e16\u754c',
  '\u30ab\u30bf\u30ab\u30ca', '\uc548\ub155\ud558\uc138\uc694', '\u6f22\u5b57 and English mixed',
  '\ud840\udc0b', // U+2000B (CJK Extension B, 4-byte UTF-8)
  // Arabic, Hebrew, Hindi, Thai
  '\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645',
  '\u0661\u0662\u0663 Arabic-Indic digits', '\u05e9\u05dc\u05d5\u05dd',
  '\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e',
  '\u0967\u0968\u0969', '\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35',
  // emoji: plain, ZWJ sequences, skin tones, flags, keycaps, variation selectors
  '\ud83d\ude00', 'I love \ud83c\udf55 and \ud83c\udf7a!', '\ud83d\udc4d\ud83c\udffd',
  '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66',
  '\ud83d\udc69\ud83c\udffe\u200d\ud83d\udcbb', '\ud83c\uddfa\ud83c\uddf8\ud83c\uddef\ud83c\uddf5',
  '1\ufe0f\u20e3', '\u2764\ufe0f', '\u263a', 'smile\ud83d\ude00smile',
  // combining marks and normalisation forms
  'cafe\u0301', 'e\u0301\u0302\u0303', 'a\u0308o\u0308u\u0308', 'Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d',
  '\u1e9b\u0323', '\ufb01ligature', '\u2460\u2461\u2462', '\u00bd \u00be', 'x\u00b2 + y\u00b3',
  '\u216b \u2163', '\uff21\uff22\uff23\uff11\uff12\uff13',
  // control characters and other rare code points
  'nul\u0000byte', 'bell\u0007', 'esc\u001b[0m', 'del\u007f', 'soft\u00adhyphen',
  'zero\u200bwidth', '\ufffd replacement', '\ud83d\ude00\u0301',
  // special token as text: gpt-3-encoder treats it as plain text
  '<|endoftext|>', 'Question: <|endoftext|> Answer:', '<|endoftext|><|endoftext|>',
  // long words and long runs
  'Pneumonoultramicroscopicsilicovolcanoconiosis', 'supercalifragilisticexpialidocious',
  'a'.repeat(300), 'ab'.repeat(100), '\u00e9'.repeat(50), '\ud83d\ude00'.repeat(20),
  ' '.repeat(40) + 'x', '\n'.repeat(30), '-'.repeat(80), '1'.repeat(100),
  'The image shows '.repeat(30),
  // empty
  '',
];

module.exports = { corpus };
