#!/usr/bin/env bash
# Every relative link in README.md and docs/*.md must resolve: the file or folder exists, and
# a #anchor names a heading of the target file by its GitHub slug (lowercase, punctuation
# dropped, spaces to hyphens, "-1", "-2" for repeated headings). Links inside code blocks and
# code spans are not links; http(s) and mailto links are not checked (no network in tests).
# Prints every broken link as FILE:LINE: [text](target): why, and fails if there is one.
set -euo pipefail
src=${SIZEGUARD_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}

python3 - "$src" <<'PY'
import os, re, sys, urllib.parse

root = sys.argv[1]
files = [os.path.join(root, 'README.md')] + sorted(
    os.path.join(root, 'docs', f) for f in os.listdir(os.path.join(root, 'docs')) if f.endswith('.md'))

FENCE = re.compile(r'^\s*(```|~~~)')
INLINE_LINK = re.compile(r'!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)')
REF_DEF = re.compile(r'^\s{0,3}\[([^\]]+)\]:\s*<?(\S+?)>?(?:\s+.*)?$')
HEADING = re.compile(r'^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
HTML_ANCHOR = re.compile(r'<a\s+(?:name|id)="([^"]+)"')

def prose_lines(path):
    """(line number, text) outside fenced code blocks, with code spans blanked out."""
    fence = None
    for number, line in enumerate(open(path, encoding='utf-8').read().split('\n'), 1):
        m = FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if fence is None:
            yield number, re.sub(r'(`+)(.+?)\1', lambda c: ' ' * len(c.group(0)), line)

def slug(text):
    """GitHub's anchor for a heading: rendered text, lowercased, only word characters,
    spaces and hyphens kept, spaces turned into hyphens."""
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)   # links and images: their text
    text = re.sub(r'<[^>]+>', '', text)                        # inline HTML tags
    text = text.replace('`', '').lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')

anchor_cache = {}
def anchors(path):
    if path not in anchor_cache:
        found, seen, fence = set(), {}, None
        for line in open(path, encoding='utf-8').read().split('\n'):
            m = FENCE.match(line)
            if m:
                fence = None if fence == m.group(1) else (fence or m.group(1))
                continue
            if fence is not None:
                continue
            found.update(HTML_ANCHOR.findall(line))
            h = HEADING.match(line)
            if h:
                base = slug(h.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f'{base}-{n}')
        anchor_cache[path] = found
    return anchor_cache[path]

broken, checked = [], 0
for path in files:
    rel = os.path.relpath(path, root)
    for number, line in prose_lines(path):
        links = [(m.group(1), m.group(2)) for m in INLINE_LINK.finditer(line)]
        ref = REF_DEF.match(line)
        if ref:
            links.append((ref.group(1), ref.group(2)))
        for text, target in links:
            if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', target) or target.startswith('//'):
                continue  # http:, https:, mailto: ...
            checked += 1
            where = f'{rel}:{number}: [{text}]({target})'
            if not target:
                broken.append(f'{where}: empty link target')
                continue
            file_part, _, anchor = target.partition('#')
            file_part = urllib.parse.unquote(file_part)
            if file_part.startswith('/'):
                dest = os.path.join(root, file_part.lstrip('/'))
            else:
                dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                broken.append(f'{where}: {os.path.relpath(dest, root)} does not exist')
            elif anchor:
                if not dest.endswith('.md') or os.path.isdir(dest):
                    broken.append(f'{where}: #{anchor} points into {os.path.relpath(dest, root)}, which is not a markdown file')
                elif urllib.parse.unquote(anchor).lower() not in anchors(dest):
                    broken.append(f'{where}: no heading with the anchor #{anchor} in {os.path.relpath(dest, root)}')

for b in broken:
    print(b)
if checked == 0:
    sys.exit('doc_links: no relative links found in README.md and docs/*.md: the link pattern is broken')
print(f'doc_links: {checked} relative links in {len(files)} files, {len(broken)} broken')
sys.exit(1 if broken else 0)
PY
