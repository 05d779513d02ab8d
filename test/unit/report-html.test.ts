import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeHtml, inlineMarkdown, markdownToHtml, splitRow } from '../../packages/lab/src/html.js';
import { mdTable } from '../../packages/lab/src/runner.js';

test('headings, paragraphs and lists', () => {
  const html = markdownToHtml('### batching — file sink\n\nFixed cost 0.387 ms\nper operation.\n\n- one\n- two\n  continued\n\n1. first\n2. second');
  assert.equal(
    html,
    [
      '<h3>batching — file sink</h3>',
      '<p>Fixed cost 0.387 ms per operation.</p>',
      '<ul>\n<li>one</li>\n<li>two continued</li>\n</ul>',
      '<ol>\n<li>first</li>\n<li>second</li>\n</ol>',
    ].join('\n'),
  );
});

test('a table written by mdTable round-trips, numeric columns right-aligned, escaped pipes kept', () => {
  const md = mdTable(['variant', 'p99 ms', 'note'], [['batched', 9.151, 'a|b'], ['unbatched', '1,769.5', '**slow**']]);
  const html = markdownToHtml(md);
  assert.match(html, /<thead><tr><th>variant<\/th><th class="num">p99 ms<\/th><th>note<\/th><\/tr><\/thead>/);
  assert.match(html, /<tr><td>batched<\/td><td class="num">9.151<\/td><td>a\|b<\/td><\/tr>/);
  assert.match(html, /<td class="num">1,769.5<\/td><td><strong>slow<\/strong><\/td>/);
  assert.equal((html.match(/<tr>/g) ?? []).length, 3);
});

test('explicit alignment in the separator row wins', () => {
  const html = markdownToHtml('| a | b |\n| :---: | ---: |\n| x | y |');
  assert.match(html, /<td class="center">x<\/td><td class="num">y<\/td>/);
});

test('a paragraph ends where a table starts', () => {
  const html = markdownToHtml('Some text\n| a | b |\n| --- | --- |\n| 1 | 2 |');
  assert.match(html, /^<p>Some text<\/p>\n<div class="table-wrap"><table>/);
});

test('inline markup: code, bold, italics, links', () => {
  assert.equal(inlineMarkdown('`a*b*c` and **bold** and *it* and _it2_'), '<code>a*b*c</code> and <strong>bold</strong> and <em>it</em> and <em>it2</em>');
  assert.equal(inlineMarkdown('see [the docs](docs/report.md)'), 'see <a href="docs/report.md">the docs</a>');
  assert.equal(inlineMarkdown('snake_case_name stays'), 'snake_case_name stays');
  assert.equal(inlineMarkdown('2×C1 * 3'), '2×C1 * 3');
});

test('result text is never raw HTML, and script URLs are not links', () => {
  const html = markdownToHtml('<script>alert(1)</script>\n\n[x](javascript:alert(1)) & "q"');
  assert.ok(!html.includes('<script>'));
  assert.ok(html.includes('&lt;script&gt;'));
  assert.ok(!html.includes('href="javascript'));
  assert.ok(html.includes('&amp; &quot;q&quot;'));
  assert.equal(escapeHtml(`<a href='x'>`), '&lt;a href=&#39;x&#39;&gt;');
});

test('fenced code is literal', () => {
  assert.equal(markdownToHtml('```\n| not | a table |\n**x**\n```'), '<pre><code>| not | a table |\n**x**</code></pre>');
});

test('splitRow honours escaped pipes and outer bars', () => {
  assert.deepEqual(splitRow('| a | b\\|c | d |'), ['a', 'b\\|c', 'd']);
  assert.deepEqual(splitRow('a | b'), ['a', 'b']);
});
