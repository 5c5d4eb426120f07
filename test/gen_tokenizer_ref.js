#!/usr/bin/env node
// test/gen_tokenizer_ref.js: the reference for test/test_tokenizer.c. Writes
//   test/vectors/tokenizer_text.txt  a varied UTF-8 test text (built below)
//   test/vectors/tokenizer_ids.txt   its GPT-2 token ids from js-tiktoken's gpt2 encoding, one per line
// js-tiktoken is an independent implementation (a port of OpenAI's tiktoken) of the same tokenizer.
// It is installed into a temporary directory (npm install --prefix), used, and removed: nothing is
// added to the repository. Run from anywhere: node test/gen_tokenizer_ref.js (or `make reference`).
//
// "<|endoftext|>" in the text is encoded as plain text (allowedSpecial = disallowedSpecial = []),
// as GPT-2's original encoder.py and our tokenizer_encode() do.
// The text avoids U+0085 and U+FEFF: JavaScript's \s differs from Unicode's White_Space there (our
// tokenizer follows White_Space, like GPT-2's Python regex), and it keeps to characters assigned long
// ago, since node's Unicode tables are newer than the Python ones data/gen_unicode.py used.
"use strict";
const { execFileSync } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const JS_TIKTOKEN = "js-tiktoken@1.0.21";

function buildText() {
  const parts = [
    // contractions, including upper case ones (not contractions for GPT-2: "'S" -> "'", "S")
    "I'm sure she's right: they're here, we've won, you'll see, he'd go, don't, can't, it's.\n",
    "IT'S DON'T WE'LL I'M THEY'RE 'Sand 'Tis 'LLama 'REd 'tis 'sand ''s 'll've ' s 'x\n",
    // plain English with punctuation
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!\n",
    "Hello world, Hello World, HELLO WORLD, hello_world, hello-world, hello.world@example.com\n",
    // digits and long numbers
    "12345678901234567890 3.14159265358979 1,000,000 -42 +7 0x1F 2024-05-20 10:30pm 1e-9 007\n",
    "3141592653589793238462643383279502884197169399375105820974944592307816406286\n",
    "abc123def 4ever GPT2 H2O x86_64 ٣٤٥ (Arabic-Indic digits) Ⅻ ½ ² ³⁄₄ 𝟙𝟚𝟛\n",
    // accented Latin and other scripts
    "café naïve résumé Ångström Straße façade jalapeño Øresund Łódź çà et là ǅemal ʰ ª\n",
    "Ελληνικά κείμενα. Русский текст, ещё. 日本語のテキストです。中文文本。한국어 텍스트.\n",
    "עברית ועוד العربية لغة हिन्दी पाठ ไทย ภาษา Türkçe İstanbul ığüşöç Tiếng Việt\n",
    // combining marks (category M: "other", not a letter) and math letters outside the BMP
    "e\u0301 a\u0308 n\u0303o 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ｆｕｌｌｗｉｄｔｈ ｱｲｳ\n",
    // emoji, incl. skin tones and zero-width joiner sequences
    "😀 👍🏽 🎉🎉🎉 ❤️ 👨\u200d👩\u200d👧 🇫🇷 ☃ ★☆\n",
    // whitespace runs: spaces, tabs, newlines, CRLF, no-break and other Unicode spaces
    "a  b   c    d\t\te\n\n\nf \n \ng\r\nh\u00a0i\u3000j\u2003k\u2028l\u000bm\u000cn\n",
    "    leading spaces\n\ttab indented\n  \t  mixed\t \n",
    "trailing spaces   \n",
    // punctuation runs
    "!!! ??? ... --- ==> <== (parens) [brackets] {braces} <tags/> @#$%^&*~` \\ | ; : \" ,,\n",
    "“curly quotes” ‘single’ «guillemets» — en–dash … ¿qué? ¡sí! ©®™ §¶ °C €100 £5 ¥\n",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!! ================================ ----------------\n",
    // special token as plain text
    "end of doc<|endoftext|>start of next <|endoftext|> and |<endoftext>|\n",
    // code
    "def foo(x):\n    return x**2  # square\n\nif (a != b) { c += 1; } else { d->e[0] = 'f'; }\n",
    // long words and repeats
    "Pneumonoultramicroscopicsilicovolcanoconiosis aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
    // a dictionary entry in GCIDE's style
    "Apple \\Ap\"ple\\, n. [OE. appel.] 1. The fleshy pome or fruit of a rosaceous tree.\n",
    "   [1913 Webster]\n\n",
    // ends with whitespace (the `\\s+(?!\\S)` end-of-text case)
    "the end   \n  ",
  ];
  return parts.join("");
}

function main() {
  const repo = path.resolve(__dirname, "..");
  const outDir = path.join(repo, "test", "vectors");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "js-tiktoken-"));
  try {
    execFileSync("npm", ["install", "--silent", "--no-save", "--no-audit", "--no-fund", "--prefix", tmp, JS_TIKTOKEN],
                 { stdio: "inherit" });
    const { getEncoding } = require(path.join(tmp, "node_modules", "js-tiktoken"));
    const enc = getEncoding("gpt2");
    const text = buildText();
    const ids = enc.encode(text, [], []);
    if (enc.decode(ids) !== text) throw new Error("js-tiktoken does not round-trip the test text");
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, "tokenizer_text.txt"), text, "utf8");
    fs.writeFileSync(path.join(outDir, "tokenizer_ids.txt"), ids.join("\n") + "\n");
    console.log(`gen_tokenizer_ref.js: ${Buffer.byteLength(text)} bytes -> ${ids.length} ids (${JS_TIKTOKEN} gpt2)`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main();
