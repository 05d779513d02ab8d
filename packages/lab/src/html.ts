/**
 * A small Markdown → HTML converter for the report: the subset experiments write
 * (headings, paragraphs, bullet and numbered lists, pipe tables, fenced code, and inline
 * bold, italics, code and links). Everything else is escaped text, never raw HTML: result
 * files are data, and the page must not run what they contain.
 */

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Only relative links and http(s)/mailto: a `javascript:` URL in a result file stays text. */
function safeHref(url: string): string | null {
  const u = url.trim();
  if (/^(https?:|mailto:)/i.test(u)) return u;
  if (/^[a-z][a-z0-9+.-]*:/i.test(u)) return null;
  return u;
}

/** Inline Markdown: `code`, **bold**, *italics* / _italics_, [text](url), and `\|` escapes. */
export function inlineMarkdown(text: string): string {
  const out: string[] = [];
  // Code spans first: their content is literal.
  const parts = text.split(/(`[^`]+`)/);
  for (const part of parts) {
    if (part.length > 2 && part.startsWith('`') && part.endsWith('`')) {
      out.push(`<code>${escapeHtml(part.slice(1, -1))}</code>`);
      continue;
    }
    let s = escapeHtml(part.replace(/\\\|/g, '|'));
    s = s.replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (m, label: string, url: string) => {
      const href = safeHref(url.replace(/&amp;/g, '&'));
      return href === null ? m : `<a href="${escapeHtml(href)}">${label}</a>`;
    });
    s = s.replace(/\*\*(?=\S)(.+?)(?<=\S)\*\*/g, '<strong>$1</strong>');
    s = s.replace(/(^|[^\w*])\*(?=\S)(.+?)(?<=\S)\*(?!\w)/g, '$1<em>$2</em>');
    s = s.replace(/(^|[^\w])_(?=\S)(.+?)(?<=\S)_(?!\w)/g, '$1<em>$2</em>');
    out.push(s);
  }
  return out.join('');
}

/** Splits a pipe-table row into cells, honouring `\|` escapes. */
export function splitRow(line: string): string[] {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const cells: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === '|') {
      cur += '\\|';
      i++;
    } else if (s[i] === '|') {
      cells.push(cur.trim());
      cur = '';
    } else cur += s[i];
  }
  cells.push(cur.trim());
  return cells;
}

const SEPARATOR = /^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$/;
const NUMERIC = /^[-+−]?[\d.,]+(e[-+]?\d+)?\s*(%|ms|s|×|x|\/s|MB|KB|B)?$/i;

function alignments(sep: string): ('left' | 'right' | 'center' | null)[] {
  return splitRow(sep).map((c) => (c.startsWith(':') && c.endsWith(':') ? 'center' : c.endsWith(':') ? 'right' : c.startsWith(':') ? 'left' : null));
}

function tableHtml(lines: string[]): string {
  const header = splitRow(lines[0]);
  const aligns = alignments(lines[1]);
  const rows = lines.slice(2).map(splitRow);
  // Columns whose every body cell is a number are right-aligned unless the table says otherwise.
  const numeric = header.map((_, i) => rows.length > 0 && rows.every((r) => (r[i] ?? '') === '' || NUMERIC.test(r[i] ?? '')));
  const attr = (i: number) => {
    const a = aligns[i] ?? (numeric[i] ? 'right' : null);
    return a ? ` class="${a === 'right' ? 'num' : a}"` : '';
  };
  const th = header.map((h, i) => `<th${attr(i)}>${inlineMarkdown(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${header.map((_, i) => `<td${attr(i)}>${inlineMarkdown(r[i] ?? '')}</td>`).join('')}</tr>`).join('\n');
  return `<div class="table-wrap"><table>\n<thead><tr>${th}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table></div>`;
}

const HEADING = /^(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const ORDERED = /^\s*\d+[.)]\s+(.*)$/;
const FENCE = /^\s*(```|~~~)/;

/**
 * Markdown → HTML. `headingOffset` shifts heading levels (an experiment's `###` inside a
 * section that is already an `<h2>` can stay `<h3>` with offset 0).
 */
export function markdownToHtml(md: string, opts: { headingOffset?: number } = {}): string {
  const lines = md.replace(/\r\n?/g, '\n').split('\n');
  const out: string[] = [];
  let i = 0;
  const isBlank = (l: string | undefined) => l === undefined || l.trim() === '';
  const startsBlock = (l: string, next: string | undefined) =>
    HEADING.test(l) || BULLET.test(l) || ORDERED.test(l) || FENCE.test(l) || (l.includes('|') && next !== undefined && SEPARATOR.test(next));
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    const h = HEADING.exec(line);
    if (h) {
      const level = Math.min(6, h[1].length + (opts.headingOffset ?? 0));
      out.push(`<h${level}>${inlineMarkdown(h[2])}</h${level}>`);
      i++;
      continue;
    }
    if (FENCE.test(line)) {
      const fence = line.trim().slice(0, 3);
      const body: string[] = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++;
      out.push(`<pre><code>${escapeHtml(body.join('\n'))}</code></pre>`);
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && SEPARATOR.test(lines[i + 1])) {
      const block = [line, lines[i + 1]];
      i += 2;
      while (i < lines.length && !isBlank(lines[i]) && lines[i].includes('|')) block.push(lines[i++]);
      out.push(tableHtml(block));
      continue;
    }
    if (BULLET.test(line) || ORDERED.test(line)) {
      const ordered = !BULLET.test(line);
      const re = ordered ? ORDERED : BULLET;
      const items: string[] = [];
      while (i < lines.length && re.test(lines[i])) {
        let item = re.exec(lines[i])![1];
        i++;
        // Continuation lines (indented, not a new item) belong to the item.
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !BULLET.test(lines[i]) && !ORDERED.test(lines[i])) item += ' ' + lines[i++].trim();
        items.push(`<li>${inlineMarkdown(item)}</li>`);
      }
      const tag = ordered ? 'ol' : 'ul';
      out.push(`<${tag}>\n${items.join('\n')}\n</${tag}>`);
      continue;
    }
    const para: string[] = [line.trim()];
    i++;
    while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i], lines[i + 1])) para.push(lines[i++].trim());
    out.push(`<p>${inlineMarkdown(para.join(' '))}</p>`);
  }
  return out.join('\n');
}
