// README's "Guarantees" names, for every guarantee, the tests that prove it (`file › title`, with
// `‹a, b, c›` standing for each of several cases). A name that no test has any more (a test
// renamed, removed or never written) would leave a guarantee nobody keeps: every name must be the
// title of a test in test/<file>.test.ts, and every guarantee must name at least one.
import test from 'ava';
import {readFileSync} from 'node:fs';
import {fileURLToPath} from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** The Guarantees section: its bullets, each with the test names it gives. */
function guarantees(): {bullet: string; names: {file: string; title: string}[]}[] {
  const readme = readFileSync(`${ROOT}README.md`, 'utf8');
  const start = readme.indexOf('\n## Guarantees\n');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end);
  const bullets = section.split('\n- ').slice(1);
  return bullets.map(b => {
    const names: {file: string; title: string}[] = [];
    for (const line of b.split('\n')) {
      const m = /^\s*(`+) ?([a-z-]+) › (.+?) ?\1[;.]\s*$/.exec(line);
      if (m) names.push({file: m[2], title: m[3]});
    }
    return {bullet: b.split('\n')[0].slice(0, 80), names};
  });
}

/** The titles a test file declares, as patterns: the parts computed at run time (`${…}`) match anything. */
function titlesOf(file: string): RegExp[] {
  const src = readFileSync(`${ROOT}test/${file}.test.ts`, 'utf8');
  const out: RegExp[] = [];
  // test(…), privileged(…), privileged.serial(…), and the same after a needing(…) (needing(TOOLS).privilegedSerial(…))
  const call = /(?:(?<![.\w])|(?<=\)\.))(?:privilegedSerial|privileged|test)(?:\.serial)?(?:\.skip)?\(\s*(['"`])/g;
  for (let m = call.exec(src); m !== null; m = call.exec(src)) {
    const quote = m[1];
    let i = call.lastIndex;
    let text = '';
    const parts: string[] = [];
    while (i < src.length && src[i] !== quote) {
      if (src[i] === '\\') {
        text += src[i + 1];
        i += 2;
      } else if (quote === '`' && src.startsWith('${', i)) {
        // skip the expression, braces balanced
        let depth = 0;
        for (; i < src.length; i++) {
          if (src[i] === '{') depth++;
          else if (src[i] === '}' && --depth === 0) break;
        }
        i++;
        parts.push(text);
        text = '';
      } else text += src[i++];
    }
    parts.push(text);
    const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    out.push(new RegExp(`^${parts.map(esc).join('.+')}$`));
  }
  return out;
}

/** `a ‹x, y› b` → [`a x b`, `a y b`]. */
function expand(title: string): string[] {
  const m = /‹([^›]*)›/.exec(title);
  if (!m) return [title];
  return m[1].split(', ').flatMap(alt => expand(title.slice(0, m.index) + alt + title.slice(m.index + m[0].length)));
}

test('README Guarantees: every guarantee names tests, and every name is the title of a test that exists', t => {
  const list = guarantees();
  t.true(list.length >= 10, `the Guarantees section has its bullets (${list.length})`);
  const titles = new Map<string, RegExp[]>();
  const missing: string[] = [];
  for (const g of list) {
    t.true(g.names.length > 0, `a guarantee that names no test: ${g.bullet}`);
    for (const n of g.names) {
      if (!titles.has(n.file)) titles.set(n.file, titlesOf(n.file));
      for (const title of expand(n.title)) if (!titles.get(n.file)!.some(re => re.test(title))) missing.push(`${n.file} › ${title}`);
    }
  }
  t.deepEqual(missing, [], 'names in README that no test has');
});

test('README Guarantees check: a name no test has is found (control)', t => {
  const titles = titlesOf('guarantees-readme');
  t.true(titles.some(re => re.test('README Guarantees check: a name no test has is found (control)')));
  t.false(titles.some(re => re.test('README Guarantees check: a test nobody wrote')));
  t.deepEqual(expand('x at ‹a, b› y'), ['x at a y', 'x at b y']);
});
