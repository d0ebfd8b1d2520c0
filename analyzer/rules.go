package analyzer

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// Rule gives spans that lagscope's span conventions do not describe a role
// and the attributes that hold its fields (YAML rules[]: a list evaluated
// before the conventions, in order; the first rule that matches a span
// decides its role). A field a rule does not name is read as the
// conventions read it.
//
//	rules:
//	  - name: appends
//	    match:
//	      span_name_regex: '^EventStore\.(Append|Write)$'
//	      kind: client
//	      service: order-service
//	      attributes: {db.system: postgresql, evt_id: "*"}
//	    role: append
//	    fields:
//	      event_id: evt_id                    # a span attribute
//	      event_type: $1                      # a capture group of span_name_regex
//	      aggregate_type: resource:service.namespace   # a resource attribute
type Rule struct {
	// Name names the rule in errors and in explanations; required and
	// unique.
	Name string `yaml:"name"`
	// Match holds the conditions a span must meet, all of them.
	Match RuleMatch `yaml:"match"`
	// Role is the role of a matching span: command, append, project, query
	// or ignore.
	Role string `yaml:"role"`
	// Fields maps lagscope fields (event_id, event_type, aggregate_type,
	// aggregate_id, aggregate_version, command, projection, query) to where
	// a matching span holds them: a span attribute key; "$N", capture group
	// N of Match.SpanNameRegex; or "resource:KEY", the resource attribute
	// KEY. The prefix "resource:" is taken to name a resource attribute:
	// a span attribute whose key starts with it cannot be read by a rule.
	Fields map[string]string `yaml:"fields"`
}

// RuleMatch holds a rule's conditions (YAML rules[].match); an empty one
// matches every span.
type RuleMatch struct {
	// SpanName is the exact span name; SpanNameRegex a regular
	// expression (RE2, unanchored: anchor it with ^ and $) the name must
	// match. At most one of the two.
	SpanName      string `yaml:"span_name"`
	SpanNameRegex string `yaml:"span_name_regex"`
	// Kind is the span kind: server, client, producer, consumer or
	// internal.
	Kind string `yaml:"kind"`
	// Service is the exact resource attribute service.name; ServiceRegex
	// a regular expression it must match. At most one of the two.
	Service      string `yaml:"service"`
	ServiceRegex string `yaml:"service_regex"`
	// Attributes are span attributes the span must carry, with these
	// values ("*": any value). A value is compared with the attribute as
	// the attribute's type reads it: "3" matches the integer 3, "true" the
	// boolean.
	Attributes map[string]string `yaml:"attributes"`
}

// Rule fields, in the order of ruleFieldNames.
const (
	fieldEventID = iota
	fieldEventType
	fieldAggregateType
	fieldAggregateID
	fieldAggregateVersion
	fieldCommand
	fieldProjection
	fieldQuery
	numFields
)

var ruleFieldNames = [numFields]string{"event_id", "event_type", "aggregate_type", "aggregate_id", "aggregate_version", "command", "projection", "query"}

var ruleRoles = map[string]Role{"command": RoleCommand, "append": RoleAppend, "project": RoleProject, "query": RoleQuery, "ignore": RoleNone}

var ruleKinds = map[string]ptrace.SpanKind{
	"server": ptrace.SpanKindServer, "client": ptrace.SpanKindClient, "producer": ptrace.SpanKindProducer,
	"consumer": ptrace.SpanKindConsumer, "internal": ptrace.SpanKindInternal,
}

// resourcePrefix marks a rule field read from a resource attribute.
const resourcePrefix = "resource:"

// maxRules bounds the rules of a config: each span is matched against them
// in turn.
const maxRules = 256

// ruleSet is the rules of a Config compiled once: exact comparisons where
// the rules give them, regular expressions only where they ask for them,
// attribute keys numbered so that a span's attributes are read in one pass.
// It is read-only after compileRules, safe for concurrent use.
type ruleSet struct {
	rules    []compiledRule
	keys     map[string]int // span attribute key -> slot
	keyList  []string       // the keys by slot
	nkeys    int
	resKeys  []string // resource attribute keys the fields read
	services bool     // some rule matches on the service
}

type compiledRule struct {
	name                string
	role                Role
	kind                ptrace.SpanKind // 0: any
	spanName            string
	hasName             bool
	nameRe              *regexp.Regexp
	service             string
	hasService          bool
	serviceRe           *regexp.Regexp
	conds               []attrCond
	fields              [numFields]fieldSrc
	hasFields, useGroup bool
}

// attrCond is a condition on a span attribute, its key as a slot.
type attrCond struct {
	slot  int
	any   bool
	str   string
	i     int64
	isInt bool
	f     float64
	isF   bool
	b     bool
	isB   bool
}

type fieldSrcKind uint8

const (
	srcNone fieldSrcKind = iota
	srcAttr
	srcGroup
	srcResource
)

type fieldSrc struct {
	kind fieldSrcKind
	n    int // slot, capture group or resource key index
}

// validateRules checks rules, each error naming the rule and key.
func validateRules(rules []Rule) error {
	_, err := compileRules(rules)
	return err
}

// compileRules compiles rules; nil when there are none.
func compileRules(rules []Rule) (*ruleSet, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	var errs []error
	if len(rules) > maxRules {
		errs = append(errs, fmt.Errorf("rules: %d rules, at most %d", len(rules), maxRules))
	}
	rs := &ruleSet{keys: map[string]int{}}
	slot := func(k string) int {
		if i, ok := rs.keys[k]; ok {
			return i
		}
		rs.keys[k] = rs.nkeys
		rs.keyList = append(rs.keyList, k)
		rs.nkeys++
		return rs.nkeys - 1
	}
	names := map[string]bool{}
	for i, r := range rules {
		id := r.Name
		if id == "" {
			id = strconv.Itoa(i)
		}
		bad := func(key, format string, args ...any) {
			errs = append(errs, fmt.Errorf("rules[%s].%s: %s", id, key, fmt.Sprintf(format, args...)))
		}
		switch {
		case r.Name == "":
			bad("name", "required")
		case names[r.Name]:
			bad("name", "%q is the name of an earlier rule", r.Name)
		}
		names[r.Name] = true
		c := compiledRule{name: r.Name}
		m := r.Match
		role, ok := ruleRoles[r.Role]
		if !ok {
			bad("role", "%q is not one of command, append, project, query, ignore", r.Role)
		}
		c.role = role
		if m.Kind != "" {
			k, ok := ruleKinds[m.Kind]
			if !ok {
				bad("match.kind", "%q is not one of server, client, producer, consumer, internal", m.Kind)
			}
			c.kind = k
		}
		if m.SpanName != "" && m.SpanNameRegex != "" {
			bad("match", "span_name and span_name_regex are exclusive")
		}
		c.spanName, c.hasName = m.SpanName, m.SpanName != ""
		if m.SpanNameRegex != "" {
			re, err := regexp.Compile(m.SpanNameRegex)
			if err != nil {
				bad("match.span_name_regex", "%v", err)
			}
			c.nameRe = re
		}
		if m.Service != "" && m.ServiceRegex != "" {
			bad("match", "service and service_regex are exclusive")
		}
		c.service, c.hasService = m.Service, m.Service != ""
		if m.ServiceRegex != "" {
			re, err := regexp.Compile(m.ServiceRegex)
			if err != nil {
				bad("match.service_regex", "%v", err)
			}
			c.serviceRe = re
		}
		if c.hasService || m.ServiceRegex != "" {
			rs.services = true
		}
		for _, k := range slices.Sorted(mapKeys(m.Attributes)) {
			if k == "" {
				bad("match.attributes", "empty key")
				continue
			}
			c.conds = append(c.conds, newAttrCond(slot(k), m.Attributes[k]))
		}
		for _, f := range slices.Sorted(mapKeys(r.Fields)) {
			fi := slices.Index(ruleFieldNames[:], f)
			if fi < 0 {
				bad("fields", "%q is not one of %s", f, strings.Join(ruleFieldNames[:], ", "))
				continue
			}
			src := r.Fields[f]
			switch {
			case src == "":
				bad("fields."+f, "empty")
			case strings.HasPrefix(src, "$"):
				n, err := strconv.Atoi(src[1:])
				switch {
				case err != nil || n < 0:
					bad("fields."+f, "%q is not a capture group ($1, $2, ...)", src)
				case c.nameRe == nil:
					bad("fields."+f, "%q needs match.span_name_regex", src)
				case n > c.nameRe.NumSubexp():
					bad("fields."+f, "%q: match.span_name_regex has %d capture groups", src, c.nameRe.NumSubexp())
				}
				c.fields[fi] = fieldSrc{kind: srcGroup, n: n}
				c.useGroup = true
			case strings.HasPrefix(src, resourcePrefix):
				k := src[len(resourcePrefix):]
				if k == "" {
					bad("fields."+f, "%q names no resource attribute", src)
				}
				j := slices.Index(rs.resKeys, k)
				if j < 0 {
					rs.resKeys = append(rs.resKeys, k)
					j = len(rs.resKeys) - 1
				}
				c.fields[fi] = fieldSrc{kind: srcResource, n: j}
			default:
				c.fields[fi] = fieldSrc{kind: srcAttr, n: slot(src)}
			}
			c.hasFields = true
		}
		rs.rules = append(rs.rules, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return rs, nil
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// newAttrCond compiles the condition that attribute slot has value v: a
// string compares as it is; as a number or boolean too when v reads as one.
func newAttrCond(slot int, v string) attrCond {
	c := attrCond{slot: slot, any: v == "*", str: v}
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		c.i, c.isInt = i, true
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		c.f, c.isF = f, true
	}
	if b, err := strconv.ParseBool(v); err == nil {
		c.b, c.isB = b, true
	}
	return c
}

// holds reports whether v meets c: by v's type, as newAttrCond compiled c.
// Maps, slices, bytes and empty values hold only for "*".
func (c *attrCond) holds(v spanbatch.Value) bool {
	if c.any {
		return true
	}
	switch v.Type {
	case pcommon.ValueTypeStr:
		return v.Str() == c.str
	case pcommon.ValueTypeInt:
		return c.isInt && v.Int() == c.i
	case pcommon.ValueTypeDouble:
		return c.isF && (v.Double() == c.f || (math.IsNaN(c.f) && math.IsNaN(v.Double())))
	case pcommon.ValueTypeBool:
		return c.isB && v.Bool() == c.b
	}
	return false
}

// linearKeys is the most rule attribute keys looked up by comparing each:
// past it a map lookup is cheaper than the comparisons.
const linearKeys = 8

// ruleScratch is a request's working memory for matching rules, part of a
// pooled scratch: no allocation per span once warm.
type ruleScratch struct {
	vals    []spanbatch.Value // by slot: the span's attribute values
	has     []bool
	resVals []spanbatch.Value // by resource key index
	resHas  []bool
	svcOK   []bool // by rule: the resource's service matches
	// names caches regular expression results per (rule, span name):
	// span names are few, so a regexp runs once per name, not per span.
	names map[nameKey]nameMatch
	// last is the last result per rule: spans of one name tend to come
	// together, and comparing a name is cheaper than hashing it.
	last []lastMatch
}

type lastMatch struct {
	name string // owned
	m    nameMatch
}

type nameKey struct {
	rule int
	name string
}

type nameMatch struct {
	ok   bool
	idx  []int  // submatch indexes, when the rule reads capture groups
	name string // the key's name, owned
}

// maxNameCache bounds ruleScratch.names; past it the cache starts over.
// Names longer than maxCachedName are not cached (the regexp runs each
// time), so that the cache holds at most about 1 MiB per pooled scratch
// whatever the spans' names.
const (
	maxNameCache  = 4096
	maxCachedName = 256
)

// resource prepares rsc for the spans of a resource with attributes attrs.
func (rs *ruleSet) resource(rsc *ruleScratch, attrs []spanbatch.KeyValue, service string) {
	if len(rsc.svcOK) < len(rs.rules) {
		rsc.svcOK = make([]bool, len(rs.rules))
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		switch {
		case r.hasService:
			rsc.svcOK[i] = service == r.service
		case r.serviceRe != nil:
			rsc.svcOK[i] = r.serviceRe.MatchString(service)
		default:
			rsc.svcOK[i] = true
		}
	}
	if len(rs.resKeys) == 0 {
		return
	}
	if len(rsc.resVals) < len(rs.resKeys) {
		rsc.resVals = make([]spanbatch.Value, len(rs.resKeys))
		rsc.resHas = make([]bool, len(rs.resKeys))
	}
	for i, k := range rs.resKeys {
		rsc.resVals[i], rsc.resHas[i] = spanbatch.Get(attrs, k)
	}
}

// match returns the first rule that matches sp, whose attributes are
// attrs, or -1, and the submatch indexes of its span name when it reads
// capture groups. It reads attrs into rsc.
func (rs *ruleSet) match(rsc *ruleScratch, sp *spanbatch.Span, attrs []spanbatch.KeyValue) (int, []int) {
	if len(rsc.vals) < rs.nkeys {
		rsc.vals = make([]spanbatch.Value, rs.nkeys)
		rsc.has = make([]bool, rs.nkeys)
	}
	if rs.nkeys > 0 {
		clear(rsc.has)
		// Of a key given twice, the last value, as over a pcommon.Map.
		if rs.nkeys <= linearKeys {
			for j := range attrs {
				k := attrs[j].Key
				for i, rk := range rs.keyList {
					if len(rk) == len(k) && rk == k {
						rsc.vals[i], rsc.has[i] = attrs[j].Value, true
						break
					}
				}
			}
		} else {
			for j := range attrs {
				if i, ok := rs.keys[attrs[j].Key]; ok {
					rsc.vals[i], rsc.has[i] = attrs[j].Value, true
				}
			}
		}
	}
	kind := sp.Kind
	name := sp.Name
next:
	for i := range rs.rules {
		r := &rs.rules[i]
		if (r.kind != 0 && r.kind != kind) || !rsc.svcOK[i] || (r.hasName && r.spanName != name) {
			continue
		}
		for j := range r.conds {
			c := &r.conds[j]
			if !rsc.has[c.slot] || !c.holds(rsc.vals[c.slot]) {
				continue next
			}
		}
		if r.nameRe == nil {
			return i, nil
		}
		m := rsc.nameMatch(i, r, name)
		if m.ok {
			return i, m.idx
		}
	}
	return -1, nil
}

func (rsc *ruleScratch) nameMatch(i int, r *compiledRule, name string) nameMatch {
	if len(rsc.last) <= i {
		rsc.last = append(rsc.last, make([]lastMatch, i+1-len(rsc.last))...)
	}
	if l := &rsc.last[i]; l.name == name && l.name != "" {
		return l.m
	}
	if m, ok := rsc.names[nameKey{i, name}]; ok {
		rsc.last[i] = lastMatch{name: m.name, m: m}
		return m
	}
	var m nameMatch
	if r.useGroup {
		m.idx = r.nameRe.FindStringSubmatchIndex(name)
		m.ok = m.idx != nil
	} else {
		m.ok = r.nameRe.MatchString(name)
	}
	if len(name) > maxCachedName {
		return m
	}
	if rsc.names == nil || len(rsc.names) >= maxNameCache {
		rsc.names = make(map[nameKey]nameMatch)
	}
	m.name = strings.Clone(name)
	owned := m.name
	rsc.names[nameKey{i, owned}] = m
	rsc.last[i] = lastMatch{name: owned, m: m}
	return m
}

// apply sets in a the fields rule i reads from sp (whose name is name,
// with submatch indexes idx), over what the conventions read.
func (rs *ruleSet) apply(rsc *ruleScratch, i int, name string, idx []int, a *spanAttrs) {
	r := &rs.rules[i]
	if !r.hasFields {
		return
	}
	for f := range numFields {
		src := r.fields[f]
		var v spanbatch.Value
		var s string
		switch src.kind {
		case srcNone:
			continue
		case srcAttr:
			if !rsc.has[src.n] {
				continue
			}
			v = rsc.vals[src.n]
		case srcResource:
			if !rsc.resHas[src.n] {
				continue
			}
			v = rsc.resVals[src.n]
		case srcGroup:
			if 2*src.n+1 >= len(idx) || idx[2*src.n] < 0 {
				continue
			}
			s = name[idx[2*src.n]:idx[2*src.n+1]]
		}
		if src.kind != srcGroup {
			if f == fieldAggregateVersion {
				a.version = intValue(v)
				continue
			}
			s = v.AsString() // allocates only for values that are not strings
		}
		switch f {
		case fieldEventID:
			a.eventID = s
		case fieldEventType:
			a.eventType = s
		case fieldAggregateType:
			a.aggType = s
		case fieldAggregateID:
			a.aggID = s
		case fieldAggregateVersion:
			a.version = parseInt(s)
		case fieldCommand:
			a.command = s
		case fieldProjection:
			a.projection = s
		case fieldQuery:
			a.query = s
		}
	}
}

// readKeys returns the span and resource attribute keys the rules read.
func (rs *ruleSet) readKeys() (span, resource []string) {
	if rs == nil {
		return nil, nil
	}
	for k := range rs.keys {
		span = append(span, k)
	}
	slices.Sort(span)
	resource = slices.Clone(rs.resKeys)
	if rs.services {
		resource = append(resource, attrServiceName)
	}
	return span, resource
}

// classifyRules returns the role of sp, whose attributes are attrs and
// which the conventions read into a: that of the first rule that matches
// it, whose fields it then sets in a, else that of the conventions
// (classify); and the index of the rule, -1 for the conventions. rules may
// be nil.
func classifyRules(rules *ruleSet, rsc *ruleScratch, sp *spanbatch.Span, attrs []spanbatch.KeyValue, a *spanAttrs) (Role, int) {
	if rules != nil {
		if i, idx := rules.match(rsc, sp, attrs); i >= 0 {
			rules.apply(rsc, i, sp.Name, idx, a)
			return rules.rules[i].role, i
		}
	}
	return classify(sp.Kind, a), -1
}
