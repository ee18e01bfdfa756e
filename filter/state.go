package filter

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// state is what the kernel lists for our table.
type state struct {
	table  *nftables.Table // nil when the table is absent
	chains []*nftables.Chain
	rules  map[string][]*nftables.Rule
	sets   map[string]*nftables.Set
	elems  map[string][]nftables.SetElement
	objs   map[string]nftables.Obj
}

func (s *state) ownership() Ownership {
	return Ownership{
		Owned:       bucketList(s.elems[setOwned]),
		HandoverOut: bucketList(s.elems[setHandoverOut]),
		HandoverIn:  bucketList(s.elems[setHandoverIn]),
	}
}

func findTable(ctx context.Context, c *nftables.Conn, name string) (*nftables.Table, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list inet tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, nil
}

// readState lists our table only; the kernel filters every dump by table
// name except the chain dump, which is filtered here.
func readState(ctx context.Context, c *nftables.Conn, name string) (*state, error) {
	st := &state{
		rules: make(map[string][]*nftables.Rule),
		sets:  make(map[string]*nftables.Set),
		elems: make(map[string][]nftables.SetElement),
		objs:  make(map[string]nftables.Obj),
	}
	t, err := findTable(ctx, c, name)
	if err != nil || t == nil {
		return st, err
	}
	st.table = t
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st.chains = append(st.chains, ch)
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of chain %s: %w", ch.Name, err)
		}
		st.rules[ch.Name] = rs
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	for _, s := range sets {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st.sets[s.Name] = s
		es, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		st.elems[s.Name] = es
	}
	objs, err := c.GetObjects(t)
	if err != nil {
		return nil, fmt.Errorf("list objects: %w", err)
	}
	for _, o := range objs {
		switch v := o.(type) {
		case *nftables.CounterObj:
			st.objs[v.Name] = o
		case *nftables.NamedObj:
			st.objs[v.Name] = o
		default:
			st.objs[fmt.Sprintf("%T", o)] = o
		}
	}
	return st, nil
}

// diff is the outcome of comparing the kernel with the rendering.
type diff struct {
	msgs []string
	// structural is set when anything but set elements differs; only a
	// rebuild repairs that.
	structural bool
	// elemSets are the sets whose elements differ.
	elemSets []string
}

func (d *diff) structure(format string, a ...any) {
	d.structural = true
	d.msgs = append(d.msgs, fmt.Sprintf(format, a...))
}

// compare checks st against w; own nil skips the bucket sets' elements.
func compare(st *state, w *desired, own *Ownership) diff {
	var d diff
	if st.table == nil {
		d.structure("table inet %s missing", w.table.Name)
		return d
	}
	if st.table.Flags != 0 {
		d.structure("table inet %s has flags set (dormant or owner), want none", w.table.Name)
	}

	have := make(map[string]*nftables.Chain)
	for _, ch := range st.chains {
		have[ch.Name] = ch
		if w.chain(ch.Name) == nil {
			d.structure("foreign chain %s", ch.Name)
		}
	}
	for _, wc := range w.chains {
		hc := have[wc.Name]
		if hc == nil {
			d.structure("chain %s missing", wc.Name)
			continue
		}
		if got, want := hookString(hc), hookString(wc); got != want {
			d.structure("chain %s is %s, want %s", wc.Name, got, want)
		}
		compareRules(&d, wc.Name, st.rules[wc.Name], w.rules[wc.Name], w.ruleStrs[wc.Name])
	}

	for name := range st.sets {
		if w.set(name) == nil {
			d.structure("foreign set %s", name)
		}
	}
	for _, ws := range w.sets {
		hs := st.sets[ws.Name]
		if hs == nil {
			d.structure("set %s missing", ws.Name)
			continue
		}
		if got, want := setShape(hs), setShape(ws); got != want {
			d.structure("set %s is %s, want %s", ws.Name, got, want)
		}
	}
	for name := range st.objs {
		if !slices.Contains(counterNames(), name) {
			d.structure("foreign object %s", name)
		}
	}
	for _, name := range counterNames() {
		if o, ok := st.objs[name]; !ok {
			d.structure("counter %s missing", name)
		} else if _, ok := o.(*nftables.CounterObj); !ok {
			d.structure("object %s is %T, want a counter", name, o)
		}
	}

	wantElems := make(map[string][]nftables.SetElement)
	for _, s := range []string{setVIP4, setVIP6, setProtos} {
		wantElems[s] = w.static[s]
	}
	if own != nil {
		for name, e := range ownershipElements(*own) {
			wantElems[name] = e
		}
	}
	names := make([]string, 0, len(wantElems))
	for n := range wantElems {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if st.sets[name] == nil {
			continue
		}
		missing, extra := elementDiff(st.elems[name], wantElems[name])
		if len(missing)+len(extra) == 0 {
			continue
		}
		d.elemSets = append(d.elemSets, name)
		if len(missing) > 0 {
			d.msgs = append(d.msgs, fmt.Sprintf("set %s misses %s", name, keyList(name, missing)))
		}
		if len(extra) > 0 {
			d.msgs = append(d.msgs, fmt.Sprintf("set %s has extra %s", name, keyList(name, extra)))
		}
	}
	return d
}

// compareRules reports foreign and missing rules rather than positions, so
// one inserted rule does not read as every later rule differing.
// ws are the ruleStrings of want, rendered once per Filter: every Apply
// reads the kernel's rules back, and formatting both sides was most of an
// Apply's CPU.
func compareRules(d *diff, chain string, have, want []*nftables.Rule, ws []string) {
	hs := make([]string, len(have))
	for i, r := range have {
		hs[i] = ruleString(r)
	}
	if slices.Equal(hs, ws) {
		return
	}
	left := make(map[string]int)
	for _, w := range ws {
		left[w]++
	}
	found := 0
	for i, h := range hs {
		if left[h] > 0 {
			left[h]--
			found++
			continue
		}
		d.structure("chain %s: foreign rule at position %d: %s", chain, i, shortRule(have[i]))
	}
	for i, w := range ws {
		if left[w] > 0 {
			left[w]--
			d.structure("chain %s: rule %d (%s) missing or altered", chain, i, comment(want[i]))
		}
	}
	if found == len(ws) && len(hs) == len(ws) {
		d.structure("chain %s: rules out of order", chain)
	}
}

// shortRule names a rule for a drift report: by its comment if it has one,
// else by the kinds of its expressions.
func shortRule(r *nftables.Rule) string {
	kinds := make([]string, len(r.Exprs))
	for i, e := range r.Exprs {
		k := strings.ToLower(strings.TrimPrefix(fmt.Sprintf("%T", e), "*expr."))
		if v, ok := e.(*expr.Verdict); ok {
			k = verdictName(v)
		}
		kinds[i] = k
	}
	if c := comment(r); c != "" {
		return fmt.Sprintf("%q (%s)", c, strings.Join(kinds, " "))
	}
	return strings.Join(kinds, " ")
}

func verdictName(v *expr.Verdict) string {
	switch v.Kind {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictJump:
		return "jump " + v.Chain
	case expr.VerdictGoto:
		return "goto " + v.Chain
	case expr.VerdictReturn:
		return "return"
	}
	return fmt.Sprintf("verdict %d", v.Kind)
}

func comment(r *nftables.Rule) string {
	c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return c
}

// ruleString renders a rule for comparison and drift reports; counter
// values and batch-local set IDs vary between listings, so they are left
// out.
func ruleString(r *nftables.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%q:", comment(r))
	for _, e := range r.Exprs {
		b.WriteString(" ")
		switch v := e.(type) {
		case *expr.Counter:
			b.WriteString("counter")
		case *expr.Lookup:
			c := *v
			c.SetID = 0
			fmt.Fprintf(&b, "lookup%+v", c)
		case *expr.Dynset:
			c := *v
			c.SetID = 0
			fmt.Fprintf(&b, "dynset%+v", c)
		default:
			s := fmt.Sprintf("%T%+v", e, e)
			b.WriteString(strings.Replace(strings.TrimPrefix(s, "*expr."), "&", "", 1))
		}
	}
	return b.String()
}

func hookString(c *nftables.Chain) string {
	if c.Hooknum == nil {
		return "a regular chain"
	}
	hooks := []string{"prerouting", "input", "forward", "output", "postrouting"}
	hook := fmt.Sprint(*c.Hooknum)
	if int(*c.Hooknum) < len(hooks) {
		hook = hooks[*c.Hooknum]
	}
	prio, policy := "?", "?"
	if c.Priority != nil {
		prio = fmt.Sprint(*c.Priority)
	}
	if c.Policy != nil {
		policy = map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: "accept", nftables.ChainPolicyDrop: "drop"}[*c.Policy]
	}
	return fmt.Sprintf("type %s hook %s priority %s policy %s", c.Type, hook, prio, policy)
}

func setShape(s *nftables.Set) string {
	return fmt.Sprintf("key %d bytes map=%v interval=%v dynamic=%v timeout=%v/%v concat=%v constant=%v",
		s.KeyType.Bytes, s.IsMap, s.Interval, s.Dynamic, s.HasTimeout, s.Timeout, s.Concatenation, s.Constant)
}

func elementDiff(have, want []nftables.SetElement) (missing, extra [][]byte) {
	h := make(map[string]bool, len(have))
	for _, e := range have {
		h[string(e.Key)] = true
	}
	w := make(map[string]bool, len(want))
	for _, e := range want {
		w[string(e.Key)] = true
		if !h[string(e.Key)] {
			missing = append(missing, e.Key)
		}
	}
	for _, e := range have {
		if !w[string(e.Key)] {
			extra = append(extra, e.Key)
		}
	}
	sort.Slice(missing, func(i, j int) bool { return bytes.Compare(missing[i], missing[j]) < 0 })
	sort.Slice(extra, func(i, j int) bool { return bytes.Compare(extra[i], extra[j]) < 0 })
	return missing, extra
}

func keyList(set string, keys [][]byte) string {
	parts := make([]string, len(keys))
	for i, k := range keys {
		switch {
		case len(k) == 4 && (set == setOwned || set == setHandoverIn || set == setHandoverOut):
			parts[i] = fmt.Sprint(binary.NativeEndian.Uint32(k))
		case set == setVIP4 || set == setVIP6:
			a, _ := netip.AddrFromSlice(k)
			parts[i] = a.String()
		default:
			parts[i] = fmt.Sprintf("%x", k)
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
