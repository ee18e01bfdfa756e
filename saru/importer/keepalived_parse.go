package importer

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// kaStmt is one keepalived statement: its words and, if it opens one, its
// block.
type kaStmt struct {
	file     string
	line     int
	words    []string
	hasBlock bool
	block    []*kaStmt
}

func (s *kaStmt) keyword() string { return s.words[0] }

// args are the words after the keyword.
func (s *kaStmt) args() []string { return s.words[1:] }

// text is the statement as a short phrase for notes and origins.
func (s *kaStmt) text() string {
	t := strings.Join(s.words, " ")
	if len(t) > 80 {
		t = strings.ToValidUTF8(t[:77], "") + "..."
	}
	return t
}

type kaTokKind int

const (
	kaWord kaTokKind = iota
	kaOpen
	kaClose
	kaEOL
)

type kaToken struct {
	kind kaTokKind
	text string
	file string
	line int
}

// Limits that keep a hostile or broken input from running away: include
// cycles, globs that match everything, braces nested without end.
const (
	maxIncludeDepth = 16
	maxFiles        = 256
	maxBlockDepth   = 32
	maxBraceWords   = 256
)

// kaLexer turns files into tokens, following includes where they stand,
// as keepalived reads includes line by line before parsing.
type kaLexer struct {
	t     *translation
	fsys  fs.FS
	toks  []kaToken
	files int
}

func (l *kaLexer) errorf(file string, line int, directive, format string, args ...any) error {
	return l.t.errorf(file, line, directive, format, args...)
}

func (l *kaLexer) read(name string, depth int) error {
	l.files++
	l.t.read(name)
	if l.files > maxFiles {
		return fmt.Errorf("%s: more than %d files are included; is a file including itself through a glob?", l.t.display(name), maxFiles)
	}
	data, err := fs.ReadFile(l.fsys, name)
	if err != nil {
		return fmt.Errorf("read keepalived configuration: %w", err)
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		line := i + 1
		text := strings.TrimRight(lines[i], "\r")
		if inc, pattern, ok := includeLine(text); ok {
			if err := l.include(name, line, inc, pattern, depth); err != nil {
				return err
			}
			continue
		}
		if c := strings.TrimLeft(text, " \t"); c != "" && strings.IndexByte("@$~", c[0]) >= 0 {
			return l.errorf(name, line, strings.Fields(c)[0], "conditional configuration, parameters and sequences (lines starting with @, $ or ~) are not supported; expand them first")
		}
		for {
			cont, err := l.tokens(name, line, text)
			if err != nil {
				return err
			}
			if !cont || i+1 >= len(lines) {
				break
			}
			// A trailing backslash continues the statement on the next
			// line; its tokens keep the first line's number.
			i++
			text = strings.TrimRight(lines[i], "\r")
		}
		l.toks = append(l.toks, kaToken{kind: kaEOL, file: name, line: line})
	}
	return nil
}

// includeLine recognises include and its variants (includer, includea,
// ...): keepalived takes the rest of the line as the file name, before
// splitting braces, so glob braces such as conf.d/{a,b}.conf survive.
func includeLine(text string) (keyword, pattern string, ok bool) {
	f := strings.Fields(stripKaComment(text))
	if len(f) == 0 {
		return "", "", false
	}
	switch f[0] {
	case "include", "includer", "includem", "includew", "includeb", "includea":
		rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stripKaComment(text)), f[0]))
		if len(rest) >= 2 && rest[0] == '"' && rest[len(rest)-1] == '"' {
			rest = rest[1 : len(rest)-1]
		}
		return f[0], rest, true
	}
	return "", "", false
}

// stripKaComment cuts a line at # or ! outside double quotes.
func stripKaComment(s string) string {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case '\\':
			i++
		case '#', '!':
			if !quoted {
				return s[:i]
			}
		}
	}
	return s
}

// include reads the files pattern names, relative to the including file's
// directory; an absolute name is taken from the root of the file system
// the import reads (the machine's / for the saru command).
func (l *kaLexer) include(from string, line int, keyword, pattern string, depth int) error {
	if pattern == "" {
		return l.errorf(from, line, keyword, "no file named")
	}
	var p string
	if strings.HasPrefix(pattern, "/") {
		p = path.Clean(strings.TrimLeft(pattern, "/"))
	} else {
		p = path.Join(path.Dir(from), pattern)
	}
	if !fs.ValidPath(p) {
		return l.errorf(from, line, keyword, "%q is outside the files the import can read, or no valid path", pattern)
	}
	if depth+1 > maxIncludeDepth {
		return l.errorf(from, line, keyword, "includes nest deeper than %d; does a file include itself?", maxIncludeDepth)
	}
	var matches []string
	seen := map[string]bool{}
	for _, pat := range expandBraces(p, maxBraceWords) {
		m, err := fs.Glob(l.fsys, pat)
		if err != nil {
			return l.errorf(from, line, keyword, "%q: %v", pattern, err)
		}
		for _, f := range m {
			if !seen[f] {
				seen[f] = true
				matches = append(matches, f)
			}
		}
	}
	if len(matches) == 0 {
		l.t.note(from, line, "%s %s matches no file; nothing included", keyword, pattern)
		return nil
	}
	for _, f := range matches {
		if err := l.read(f, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// expandBraces expands csh-style braces as keepalived's glob(GLOB_BRACE)
// does: a{b,c}d is abd and acd. Unbalanced braces stay as written.
func expandBraces(s string, limit int) []string {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		return []string{s}
	}
	depth, close := 0, -1
	var commas []int
	for i := open; i < len(s) && close < 0; i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				close = i
			}
		case ',':
			if depth == 1 {
				commas = append(commas, i)
			}
		}
	}
	if close < 0 {
		return []string{s}
	}
	pre, post := s[:open], s[close+1:]
	var alts []string
	start := open + 1
	for _, c := range append(commas, close) {
		alts = append(alts, s[start:c])
		start = c + 1
	}
	var out []string
	for _, a := range alts {
		for _, e := range expandBraces(pre+a+post, limit) {
			if len(out) == limit {
				return out
			}
			out = append(out, e)
		}
	}
	return out
}

// tokens splits one line: words, "quoted strings" (one word, quotes
// removed), braces (always tokens of their own, as keepalived splits them
// off), comments from # or ! outside quotes. cont reports a trailing
// backslash.
func (l *kaLexer) tokens(file string, line int, s string) (cont bool, err error) {
	var word strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			l.toks = append(l.toks, kaToken{kind: kaWord, text: word.String(), file: file, line: line})
			word.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ' ', '\t', '\v', '\f':
			flush()
		case '#', '!':
			flush()
			return false, nil
		case '{', '}':
			flush()
			kind := kaOpen
			if c == '}' {
				kind = kaClose
			}
			l.toks = append(l.toks, kaToken{kind: kind, text: string(c), file: file, line: line})
		case '"':
			end := strings.IndexByte(s[i+1:], '"')
			if end < 0 {
				return false, l.errorf(file, line, strings.Fields(s)[0], "unterminated quote")
			}
			word.WriteString(s[i+1 : i+1+end])
			inWord = true
			i += end + 1
		case '\\':
			if i+1 == len(s) {
				flush()
				return true, nil
			}
			if s[i+1] == '#' || s[i+1] == '!' {
				i++
			}
			word.WriteByte(s[i])
			inWord = true
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return false, nil
}

// parse builds the statement tree. A { opens the block of the statement
// on its line or, when it stands alone, of the statement before it.
func (l *kaLexer) parse() ([]*kaStmt, error) {
	type frame struct {
		owner *kaStmt
		stmts *[]*kaStmt
	}
	var top []*kaStmt
	stack := []frame{{stmts: &top}}
	var cur, last *kaStmt
	end := func() {
		if cur != nil {
			f := stack[len(stack)-1]
			*f.stmts = append(*f.stmts, cur)
			last, cur = cur, nil
		}
	}
	for _, tok := range l.toks {
		switch tok.kind {
		case kaWord:
			if cur == nil {
				cur = &kaStmt{file: tok.file, line: tok.line}
			}
			cur.words = append(cur.words, tok.text)
		case kaEOL:
			end()
		case kaOpen:
			end()
			if last == nil || last.hasBlock {
				return nil, l.errorf(tok.file, tok.line, "{", "a block must follow a keyword")
			}
			if len(stack) > maxBlockDepth {
				return nil, l.errorf(tok.file, tok.line, last.keyword(), "blocks nest deeper than %d", maxBlockDepth)
			}
			last.hasBlock = true
			stack = append(stack, frame{owner: last, stmts: &last.block})
			last = nil
		case kaClose:
			end()
			if len(stack) == 1 {
				return nil, l.errorf(tok.file, tok.line, "}", "no block to close here (one } too many)")
			}
			last = stack[len(stack)-1].owner
			stack = stack[:len(stack)-1]
		}
	}
	end()
	if len(stack) > 1 {
		o := stack[len(stack)-1].owner
		return nil, l.errorf(o.file, o.line, o.keyword(), "its block is never closed (a } is missing)")
	}
	return top, nil
}
