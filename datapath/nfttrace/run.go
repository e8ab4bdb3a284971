package nfttrace

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"
)

// run is one path of a packet through the table, with a fixed sequence of random picks.
type run struct {
	t     *Tracer
	table *knftables.FakeTable
	pkt   Packet

	picks        []int // the picks to take, in order; 0 past the end
	taken, arity []int // the picks taken and how many choices each had

	saddr, daddr string
	dport        int
	mark         uint32
	dnat         string
	masquerade   bool
	rules        []string
	updates      []setUpdate
}

// verdict is how a rule or chain ends.
type verdict int

const (
	next     verdict = iota // go on with the next rule
	toCaller                // the chain returns (return, or its end)
	accepted
	dropped
	rejected
)

// maxDepth bounds jumps and gotos, as the kernel's stack does (it refuses loops at load).
const maxDepth = 64

func (r *run) packet() (Outcome, error) {
	hooks := []knftables.BaseChainHook{knftables.PreroutingHook, "", knftables.PostroutingHook}
	if r.t.local[r.saddr] {
		hooks = []knftables.BaseChainHook{knftables.OutputHook, knftables.PostroutingHook}
	}
	outcome := func(v Verdict) Outcome {
		return Outcome{Verdict: v, DNAT: r.dnat, Masquerade: r.masquerade, Rules: r.rules, updates: r.updates}
	}
	for _, hook := range hooks {
		delivered := false
		if hook == "" { // routing, after prerouting's DNAT
			hook, delivered = knftables.ForwardHook, r.t.local[r.daddr]
			if delivered {
				hook = knftables.InputHook
			}
		}
		for _, chain := range r.baseChains(hook) {
			v, err := r.chain(chain, 0)
			if err != nil {
				return Outcome{}, err
			}
			switch v {
			case dropped:
				return outcome(Drop), nil
			case rejected:
				return outcome(Reject), nil
			}
		}
		if delivered { // to this node: no postrouting
			break
		}
	}
	return outcome(Accept), nil
}

// baseChains lists the chains on hook in the order the kernel runs them.
func (r *run) baseChains(hook knftables.BaseChainHook) []string {
	type base struct {
		name     string
		priority int
	}
	var chains []base
	for name, c := range r.table.Chains {
		if c.Hook != nil && *c.Hook == hook {
			chains = append(chains, base{name, priorityValue(c.Priority)})
		}
	}
	slices.SortFunc(chains, func(a, b base) int { return cmp.Or(cmp.Compare(a.priority, b.priority), cmp.Compare(a.name, b.name)) })
	out := make([]string, len(chains))
	for i, c := range chains {
		out[i] = c.name
	}
	return out
}

// priorityValue reads a chain priority: a number, a standard name, or "name + n" / "name - n"
// (spaces optional: kube-proxy writes "dstnat-10").
func priorityValue(p *knftables.BaseChainPriority) int {
	if p == nil {
		return 0
	}
	names := map[string]int{"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
	fields := strings.Fields(strings.NewReplacer("-", " - ", "+", " + ").Replace(string(*p)))
	value := 0
	for i, f := range fields {
		switch n, err := strconv.Atoi(f); {
		case err == nil && i > 0 && fields[i-1] == "-":
			value -= n
		case err == nil:
			value += n
		default:
			value += names[f]
		}
	}
	return value
}

func (r *run) chain(name string, depth int) (verdict, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("chain %s: more than %d nested jumps", name, maxDepth)
	}
	c := r.table.Chains[name]
	if c == nil {
		return 0, fmt.Errorf("no chain %s", name)
	}
	for _, rule := range c.Rules {
		v, err := r.rule(name, rule.Rule, depth)
		if err != nil {
			return 0, fmt.Errorf("chain %s, rule %q: %w", name, rule.Rule, err)
		}
		if v != next {
			return v, nil
		}
	}
	return toCaller, nil
}

// rule runs one rule's statements in order: matches stop it when they fail; the first
// verdict ends it.
func (r *run) rule(chain, text string, depth int) (verdict, error) {
	p := &parser{tokens: tokenize(text)}
	noted := false
	note := func() {
		if !noted {
			noted = true
			r.rules = append(r.rules, chain+": "+text)
		}
	}
	for !p.done() {
		switch tok := p.peek(); {
		case tok == "jump" || tok == "goto":
			note()
			p.next()
			return r.jumpOrGoto(tok, p.next(), depth)
		case tok == "return":
			note()
			return toCaller, nil
		case tok == "accept":
			note()
			return accepted, nil
		case tok == "drop":
			note()
			return dropped, nil
		case tok == "reject":
			note()
			return rejected, nil // "with ..." says how; any reject refuses the client
		case tok == "counter":
			p.next()
			if p.peek() == "packets" {
				p.skip(4)
			}
		case tok == "masquerade":
			note()
			r.masquerade = true
			return accepted, nil // a nat statement ends the chain, options aside
		case tok == "dnat":
			ok, err := r.dnatStatement(p)
			if err != nil || !ok {
				return next, err
			}
			note()
			return accepted, nil
		case tok == "update":
			note()
			if err := r.updateStatement(p); err != nil {
				return next, err
			}
		case isRewrite(tok, p.at(1), p.at(2)):
			ok, err := r.rewrite(p)
			if err != nil || !ok {
				return next, err
			}
			note()
		case tok == "meta" && p.at(1) == "mark" && p.at(2) == "set":
			note()
			if err := r.setMark(p); err != nil {
				return next, err
			}
		default:
			matched, target, err := r.match(p)
			if err != nil || !matched {
				return next, err
			}
			if target != "" {
				note()
				return r.verdictOf(target, depth)
			}
		}
	}
	return next, nil
}

// verdictOf applies a verdict written as map data ("goto chain", "drop", ...).
func (r *run) verdictOf(target string, depth int) (verdict, error) {
	words := strings.Fields(target)
	switch {
	case len(words) == 2 && (words[0] == "jump" || words[0] == "goto"):
		return r.jumpOrGoto(words[0], words[1], depth)
	case len(words) == 1 && words[0] == "drop":
		return dropped, nil
	case len(words) == 1 && words[0] == "accept":
		return accepted, nil
	case len(words) == 1 && words[0] == "return":
		return toCaller, nil
	}
	return 0, fmt.Errorf("unsupported verdict %q", target)
}

// jumpOrGoto runs chain: after a jump the calling rule's chain goes on; after a goto it
// returns to its own caller.
func (r *run) jumpOrGoto(kind, chain string, depth int) (verdict, error) {
	v, err := r.chain(chain, depth+1)
	if err != nil || (v != toCaller && v != next) {
		return v, err
	}
	if kind == "goto" {
		return toCaller, nil
	}
	return next, nil
}

// match reads "expression [operator] value" and says whether the packet matches; for a
// verdict map it also returns the verdict found.
func (r *run) match(p *parser) (matched bool, verdictText string, err error) {
	values, applies, err := r.expression(p)
	if err != nil {
		return false, "", err
	}
	if !applies { // e.g. "tcp dport" of a UDP packet: the kernel breaks off the rule
		return false, "", nil
	}
	switch op := p.next(); {
	case op == "vmap":
		data, found, err := r.lookup(p, values)
		if err != nil || !found {
			return false, "", err
		}
		return true, strings.Join(data, " "), nil
	case strings.HasPrefix(op, "@"):
		in, err := r.inSet(op[1:], values)
		return in, "", err
	case op == "!=" || op == "==":
		want := p.values()
		return anyMatches(values, want) == (op == "=="), "", nil
	case op == "&":
		return r.maskedMatch(p, values)
	case op == "":
		return false, "", errors.New("expression without a value")
	default: // an implicit "==": a value, a "a,b" list or a "{ ... }" set
		p.pos--
		return anyMatches(values, p.values()), "", nil
	}
}

// maskedMatch reads "& mask ==|!= value" after a number (the packet mark).
func (r *run) maskedMatch(p *parser, values []string) (bool, string, error) {
	mask, err1 := parseNumber(p.next())
	op := p.next()
	want, err2 := parseNumber(p.next())
	have, err3 := parseNumber(strings.Join(values, ""))
	if err := errors.Join(err1, err2, err3); err != nil {
		return false, "", fmt.Errorf("masked comparison: %w", err)
	}
	if op != "==" && op != "!=" {
		return false, "", fmt.Errorf("unsupported masked comparison %q", op)
	}
	return (have&mask == want) == (op == "=="), "", nil
}

// expression reads a concatenation of selectors ("ip daddr . meta l4proto . th dport")
// and returns their values for the packet; applies is false when one does not apply to
// it (a payload of another protocol).
func (r *run) expression(p *parser) (values []string, applies bool, err error) {
	applies = true
	for {
		v, ok, err := r.selector(p, applies)
		if err != nil {
			return nil, false, err
		}
		values, applies = append(values, v), applies && ok
		if p.peek() != "." {
			return values, applies, nil
		}
		p.next()
	}
}

// selector reads one selector and returns its value for the packet. Once an earlier
// part of the concatenation did not apply (evaluate false), the kernel has broken off:
// a numgen is not evaluated, so it makes no pick.
func (r *run) selector(p *parser, evaluate bool) (string, bool, error) {
	first, second := p.next(), p.next()
	switch {
	case (first == "ip" || first == "ip6") && second == "saddr":
		return r.saddr, isIPv6(r.saddr) == (first == "ip6"), nil
	case (first == "ip" || first == "ip6") && second == "daddr":
		return r.daddr, isIPv6(r.daddr) == (first == "ip6"), nil
	case first == "meta" && second == "l4proto":
		return r.pkt.Protocol, true, nil
	case first == "meta" && second == "mark":
		return fmt.Sprintf("0x%x", r.mark), true, nil
	case first == "th" && second == "dport":
		return strconv.Itoa(r.dport), true, nil
	case (first == "tcp" || first == "udp" || first == "sctp") && second == "dport":
		return strconv.Itoa(r.dport), r.pkt.Protocol == first, nil
	case first == "ct" && second == "state":
		return "new", true, nil // the tracer follows first packets only
	case first == "ct" && second == "status":
		if r.dnat != "" {
			return "dnat", true, nil
		}
		return "none", true, nil
	case first == "fib" && (second == "saddr" || second == "daddr") && p.peek() == "type":
		p.next()
		addr := r.saddr
		if second == "daddr" {
			addr = r.daddr
		}
		if r.t.local[addr] {
			return "local", true, nil
		}
		return "unicast", true, nil
	case first == "numgen" && second == "random" && p.peek() == "mod":
		p.next()
		n, err := strconv.Atoi(p.next())
		if err != nil || n < 1 {
			return "", false, fmt.Errorf("numgen random mod: bad modulus: %w", err)
		}
		if !evaluate {
			return "", false, nil
		}
		return strconv.Itoa(r.pick(n)), true, nil
	}
	return "", false, fmt.Errorf("unsupported expression %q", first+" "+second)
}

// pick takes the next random pick among n.
func (r *run) pick(n int) int {
	i, k := len(r.taken), 0
	if i < len(r.picks) {
		k = r.picks[i]
	}
	r.taken, r.arity = append(r.taken, k), append(r.arity, n)
	return k
}

// lookup reads the map after "vmap" or "map" ("@name" or an anonymous "{ k : v , ... }")
// and returns the data for key.
func (r *run) lookup(p *parser, key []string) ([]string, bool, error) {
	ref := p.next()
	if strings.HasPrefix(ref, "@") {
		m := r.table.Maps[ref[1:]]
		if m == nil {
			return nil, false, fmt.Errorf("no map %s", ref)
		}
		for _, e := range m.Elements {
			if keyMatches(key, e.Key) {
				return e.Value, true, nil
			}
		}
		return nil, false, nil
	}
	if ref != "{" {
		return nil, false, fmt.Errorf("map expected, got %q", ref)
	}
	var found []string
	ok := false
	for p.peek() != "}" && !p.done() {
		var k, v []string
		for tok := p.next(); tok != ":" && !p.done(); tok = p.next() {
			k = append(k, tok)
		}
		for p.peek() != "," && p.peek() != "}" && !p.done() {
			v = append(v, p.next())
		}
		if p.peek() == "," {
			p.next()
		}
		if !ok && keyMatches(key, splitConcatenation(k)) {
			found, ok = v, true
		}
	}
	if p.next() != "}" {
		return nil, false, errors.New("unterminated anonymous map")
	}
	return found, ok, nil
}

// inSet tells whether key is in the named set (or map): its static elements in the
// Fake, the dynamic ones Connect recorded, and those this path added.
func (r *run) inSet(name string, key []string) (bool, error) {
	var elements []*knftables.Element
	switch {
	case r.table.Sets[name] != nil:
		elements = r.table.Sets[name].Elements
	case r.table.Maps[name] != nil:
		elements = r.table.Maps[name].Elements
	default:
		return false, fmt.Errorf("no set %s", name)
	}
	for _, e := range elements {
		if keyMatches(key, e.Key) {
			return true, nil
		}
	}
	joined := strings.Join(key, " . ")
	for _, u := range r.updates {
		if u.set == name && u.key == joined {
			return true, nil
		}
	}
	return r.t.inDynamicSet(name, joined), nil
}

// dnatStatement reads "dnat [ip|ip6] to ADDR[:PORT]" or "dnat [ip|ip6] to EXPR map @m"
// and DNATs the packet; false when the map has no element for it (the rule breaks off).
func (r *run) dnatStatement(p *parser) (bool, error) {
	p.next()
	if (p.peek() == "ip" || p.peek() == "ip6") && p.at(1) == "to" {
		p.next()
	}
	if p.next() != "to" {
		return false, errors.New("dnat without \"to\"")
	}
	var ip, port string
	if isSelector(p.peek()) {
		data, found, err := r.mapped(p, "dnat")
		if err != nil || !found {
			return false, err
		}
		ip = data[0]
		if len(data) > 1 {
			port = data[1]
		}
	} else {
		target := p.next()
		var err error
		if ip, port, err = net.SplitHostPort(target); err != nil {
			ip, port = strings.Trim(target, "[]"), ""
		}
	}
	p.pos = len(p.tokens) // flags (fully-random, persistent) change nothing here
	r.daddr = canonical(ip)
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil {
			return false, fmt.Errorf("dnat port %q: %w", port, err)
		}
		r.dport = n
	}
	r.dnat = net.JoinHostPort(r.daddr, strconv.Itoa(r.dport))
	return true, nil
}

// mapped reads "EXPR map @m" (or an anonymous map) and returns the data for the packet;
// false when a part of EXPR is not in the packet or the map has no element for it.
func (r *run) mapped(p *parser, statement string) ([]string, bool, error) {
	key, applies, err := r.expression(p)
	if err != nil || !applies {
		return nil, false, err
	}
	if p.next() != "map" {
		return nil, false, fmt.Errorf("%s to an expression without a map", statement)
	}
	return r.lookup(p, key)
}

// isRewrite tells whether a statement rewrites the destination address or port
// ("ip daddr set ...", "tcp dport set ...").
func isRewrite(first, second, third string) bool {
	switch {
	case third != "set":
		return false
	case first == "ip" || first == "ip6":
		return second == "daddr"
	case first == "th" || first == "tcp" || first == "udp" || first == "sctp":
		return second == "dport"
	}
	return false
}

// rewrite reads "FIELD set VALUE" or "FIELD set EXPR map @m" for the destination address
// or port and rewrites the packet; false when the field is not in this packet (another
// family or protocol) or the map has no element for it, which breaks off the rule.
func (r *run) rewrite(p *parser) (bool, error) {
	isAddress := p.at(1) == "daddr"
	if _, applies, err := r.selector(p, true); err != nil || !applies {
		return false, err
	}
	p.next() // "set"
	var value string
	if isSelector(p.peek()) {
		data, found, err := r.mapped(p, "rewrite")
		if err != nil || !found {
			return false, err
		}
		value = strings.Join(data, "")
	} else {
		value = p.next()
	}
	if isAddress {
		r.daddr = canonical(value)
		return true, nil
	}
	port, err := strconv.Atoi(value)
	if err != nil || port < 0 || port > 65535 {
		return false, fmt.Errorf("rewrite to port %q", value)
	}
	r.dport = port
	return true, nil
}

// updateStatement reads "update @set { EXPR }".
func (r *run) updateStatement(p *parser) error {
	p.next()
	set := p.next()
	if !strings.HasPrefix(set, "@") || p.next() != "{" {
		return errors.New("update: want @set { expression }")
	}
	key, _, err := r.expression(p)
	if err != nil {
		return err
	}
	if p.next() != "}" {
		return errors.New("update: unterminated key")
	}
	r.updates = append(r.updates, setUpdate{set: set[1:], key: strings.Join(key, " . ")})
	return nil
}

// setMark reads "meta mark set VALUE" or "meta mark set meta mark (|, ^, &) VALUE".
func (r *run) setMark(p *parser) error {
	p.skip(3)
	if p.peek() != "meta" {
		v, err := parseNumber(p.next())
		r.mark = v
		return err
	}
	p.skip(2)
	op := p.next()
	v, err := parseNumber(p.next())
	if err != nil {
		return err
	}
	switch op {
	case "|":
		r.mark |= v
	case "^":
		r.mark ^= v
	case "&":
		r.mark &= v
	default:
		return fmt.Errorf("unsupported mark operation %q", op)
	}
	return nil
}

// splitConcatenation joins the tokens of "a . b" into the components a and b.
func splitConcatenation(tokens []string) []string {
	var out []string
	for _, part := range strings.Split(strings.Join(tokens, " "), " . ") {
		out = append(out, strings.ReplaceAll(part, " ", ""))
	}
	return out
}

func isSelector(tok string) bool {
	switch tok {
	case "ip", "ip6", "meta", "th", "tcp", "udp", "sctp", "ct", "fib", "numgen":
		return true
	}
	return false
}

func isIPv6(addr string) bool { return strings.Contains(addr, ":") }

func parseNumber(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 0, 32)
	return uint32(n), err
}

// keyMatches compares a packet's key with an element's, component by component.
func keyMatches(have, element []string) bool {
	if len(have) != len(element) {
		return false
	}
	for i := range have {
		if !valueMatches(have[i], strings.TrimSpace(element[i])) {
			return false
		}
	}
	return true
}

func anyMatches(values, candidates []string) bool {
	for _, c := range candidates {
		if keyMatches(values, []string{c}) {
			return true
		}
	}
	return false
}

// valueMatches compares one packet value with a rule's or element's: addresses against
// addresses and prefixes, numbers against numbers and ranges, words as words.
func valueMatches(have, want string) bool {
	if have == want {
		return true
	}
	if prefix, err := netip.ParsePrefix(want); err == nil {
		addr, err := netip.ParseAddr(have)
		return err == nil && prefix.Contains(addr.Unmap())
	}
	if a, err := netip.ParseAddr(want); err == nil {
		b, err := netip.ParseAddr(have)
		return err == nil && a.Unmap() == b.Unmap()
	}
	n, err := strconv.ParseUint(have, 0, 32)
	if err != nil {
		return false
	}
	if lo, hi, isRange := strings.Cut(want, "-"); isRange {
		l, err1 := strconv.ParseUint(lo, 0, 32)
		h, err2 := strconv.ParseUint(hi, 0, 32)
		return err1 == nil && err2 == nil && l <= n && n <= h
	}
	m, err := strconv.ParseUint(want, 0, 32)
	return err == nil && m == n
}

// parser walks the tokens of one rule.
type parser struct {
	tokens []string
	pos    int
}

// tokenize splits a rule into words, with braces and commas words of their own.
func tokenize(rule string) []string {
	r := strings.NewReplacer("{", " { ", "}", " } ", ",", " , ")
	return strings.Fields(r.Replace(rule))
}

func (p *parser) done() bool { return p.pos >= len(p.tokens) }
func (p *parser) peek() string {
	return p.at(0)
}
func (p *parser) at(i int) string {
	if p.pos+i < len(p.tokens) {
		return p.tokens[p.pos+i]
	}
	return ""
}
func (p *parser) next() string {
	tok := p.peek()
	p.pos++
	return tok
}
func (p *parser) skip(n int) { p.pos += n }

// values reads one value, a "a,b" list or a "{ a , b }" set of them.
func (p *parser) values() []string {
	if p.peek() != "{" {
		out := []string{p.next()}
		for p.peek() == "," {
			p.next()
			out = append(out, p.next())
		}
		return out
	}
	p.next()
	var out []string
	for tok := p.next(); tok != "}" && tok != ""; tok = p.next() {
		if tok != "," {
			out = append(out, tok)
		}
	}
	return out
}
