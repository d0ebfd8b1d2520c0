package analyzer

import (
	"encoding/hex"
	"fmt"
	"strings"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/lagscope/lagscope/spanbatch"
)

// SpanExplanation says what the analysis makes of one span, for `lagscope
// explain`: its role, what gave it the role, the fields read, and what its
// facts would wait for if the input is all there is.
type SpanExplanation struct {
	// TraceID and SpanID are hex, as trace viewers show them.
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
	Name    string `json:"name"`
	Service string `json:"service"`
	Kind    string `json:"kind"`
	// Role is command, append, project, query or ignored.
	Role string `json:"role"`
	// By is what gave the role: "rule: NAME", or the convention, such as
	// "convention: cqrs.operation", "convention: command name",
	// "convention: messaging.operation.type", "convention: span kind
	// PRODUCER", "convention: none" (ignored: nothing describes it).
	By string `json:"by"`
	// Fields are the fields read (as the conventions or the rule read them).
	Fields ExplainedFields `json:"fields"`
	// Events are the ids of the events the span appends or projects: an
	// event id, or trace:span of the producer span that stands for it.
	Events []string `json:"events,omitempty"`
	// Note says why a span with a role gives no fact, if so.
	Note string `json:"note,omitempty"`
	// Waits says what a fact of the span waits for that the input lacks;
	// empty when it joins.
	Waits string `json:"waits,omitempty"`
}

// ExplainedFields are the fields read of a span.
type ExplainedFields struct {
	EventID       string `json:"event_id,omitempty"`
	EventType     string `json:"event_type,omitempty"`
	AggregateType string `json:"aggregate_type,omitempty"`
	AggregateID   string `json:"aggregate_id,omitempty"`
	Version       int64  `json:"aggregate_version,omitempty"`
	Command       string `json:"command,omitempty"`
	Projection    string `json:"projection,omitempty"`
	Query         string `json:"query,omitempty"`
}

// Explain explains every span of td, in order, as an Analyzer built from
// cfg classifies it, taking td as the whole input: an append whose command
// span is not in td, or a projection whose event or producer span is not,
// says so in Waits. It is not on the analysis path (it allocates freely)
// and keeps nothing. It reads td as the analysis does: converted into a
// spanbatch.Batch of what Config.Reads names. It fails only for a cfg that
// Validate rejects.
func Explain(cfg Config, td ptrace.Traces) ([]SpanExplanation, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid analyzer config: %w", err)
	}
	rules, err := compileRules(cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("compile rules: %w", err)
	}
	var b spanbatch.Batch
	b.FromTraces(td, cfg.Reads().Filter())
	type spanInfo struct {
		sp      *spanbatch.Span
		service string
		role    Role
		by      string
		a       spanAttrs
		facts   []Fact
		prod    []spanKey
		dup     bool
	}
	var spans []*spanInfo
	parents := map[spanKey][8]byte{}
	commands := map[spanKey]string{}
	producers := map[spanKey]EventKey{} // append spans of one event
	producerIDs := map[spanKey]string{}
	multis := map[spanKey][]Fact{} // append spans of several events
	appended := map[EventKey]bool{}
	var rsc ruleScratch
	for _, res := range b.Resources {
		rattrs := b.ResourceAttributes(res)
		service := ""
		if v, ok := spanbatch.Get(rattrs, attrServiceName); ok {
			service = v.Str()
		}
		if rules != nil {
			rules.resource(&rsc, rattrs, service)
		}
		for _, scope := range b.Scopes[res.Scopes.Lo:res.Scopes.Hi] {
			for k := scope.Spans.Lo; k < scope.Spans.Hi; k++ {
				sp := &b.Spans[k]
				s := &spanInfo{sp: sp, service: service}
				key := spanKey{trace: sp.TraceID, span: sp.SpanID}
				if _, seen := parents[key]; seen {
					s.dup = true
				}
				parents[key] = sp.ParentSpanID
				attrs := b.SpanAttributes(sp)
				s.a.read(attrs)
				var i int
				s.role, i = classifyRules(rules, &rsc, sp, attrs, &s.a)
				if i >= 0 {
					s.by = "rule: " + rules.rules[i].name
				} else {
					_, s.by = classifyWhy(sp.Kind, &s.a)
				}
				if sp.Status != ptrace.StatusCodeError {
					switch s.role {
					case RoleCommand:
						name := s.a.command
						if name == "" {
							name = sp.Name
						}
						commands[key] = name
					case RoleAppend:
						s.facts = eventFacts(nil, appendBase(sp, ""), &b, sp, &s.a)
						if len(s.facts) == 1 && !s.dup {
							producers[key] = s.facts[0].Event
							producerIDs[key] = s.facts[0].DisplayID()
						} else if len(s.facts) > 1 && !s.dup {
							multis[key] = s.facts
						}
						for _, f := range s.facts {
							appended[f.Event] = true
						}
					case RoleProject:
						s.facts, s.prod = projectFacts(nil, nil, &b, sp, &s.a, service)
					}
				}
				spans = append(spans, s)
			}
		}
	}
	out := make([]SpanExplanation, 0, len(spans))
	for _, s := range spans {
		sp := s.sp
		tid, sid := sp.TraceID, sp.SpanID
		e := SpanExplanation{
			TraceID: hex.EncodeToString(tid[:]),
			SpanID:  hex.EncodeToString(sid[:]),
			Name:    sp.Name,
			Service: s.service,
			Kind:    strings.ToLower(strings.TrimPrefix(sp.Kind.String(), "SPAN_KIND_")),
			Role:    s.role.String(),
			By:      s.by,
			Fields: ExplainedFields{
				EventID: s.a.eventID, EventType: s.a.eventType, AggregateType: s.a.aggType,
				AggregateID: s.a.aggID, Version: s.a.version, Command: s.a.command,
				Projection: s.a.projection, Query: s.a.query,
			},
		}
		switch {
		case s.dup:
			e.Note = "a copy of an earlier span (same trace and span id): a retry, counted in lagscope_duplicate_spans_total and ignored"
			out = append(out, e)
			continue
		case s.role != RoleNone && s.role != RoleCommand && s.role != RoleQuery && sp.Status == ptrace.StatusCodeError:
			e.Note = "status Error: it wrote nothing, so it gives no fact"
		}
		key := spanKey{trace: sp.TraceID, span: sp.SpanID}
		switch s.role {
		case RoleCommand:
			e.Fields.Command = commands[key]
		case RoleQuery:
			if e.Fields.Query == "" {
				e.Fields.Query = sp.Name
			}
		case RoleAppend:
			if len(s.facts) == 0 && e.Note == "" {
				e.Note = "no event id: neither the span nor its cqrs.event events carry one"
				break
			}
			for _, f := range s.facts {
				e.Events = append(e.Events, f.DisplayID())
			}
			cur, missing := sp.ParentSpanID, ""
			for depth := 0; depth < 128 && cur != ([8]byte{}); depth++ {
				k := spanKey{trace: key.trace, span: cur}
				if c, ok := commands[k]; ok {
					e.Fields.Command = c
					break
				}
				p, ok := parents[k]
				if !ok {
					missing = hex.EncodeToString(cur[:])
					break
				}
				cur = p
			}
			switch {
			case missing != "":
				e.Waits = fmt.Sprintf("its command: ancestor span %s is not in the input (waits join.command_wait, then command=\"none\")", missing)
			case e.Fields.Command == "":
				e.Fields.Command = "none"
			}
		case RoleProject:
			if len(s.facts) == 0 && e.Note == "" {
				e.Note = "no event id, parent span or link: nothing says which event it projects"
				break
			}
			e.Fields.Projection = first(s.a.projection, s.a.msgGroup, s.a.msgSubscription, s.service)
			var waits []string
			for i, f := range s.facts {
				ev := f.Event
				if pk := s.prod[i]; pk != (spanKey{}) {
					id := hex.EncodeToString(pk.trace[:]) + ":" + hex.EncodeToString(pk.span[:])
					if pe, ok := producers[pk]; ok {
						ev = pe
					} else if fs, ok := multis[pk]; ok {
						// It projects every event its producer appended.
						for _, pf := range fs {
							e.Events = append(e.Events, pf.DisplayID())
							if !appended[pf.Event] {
								waits = append(waits, fmt.Sprintf("the append of event %s is not in the input", pf.DisplayID()))
							}
						}
						continue
					} else if _, ok := parents[pk]; !ok {
						waits = append(waits, fmt.Sprintf("its producer span %s is not in the input (waits join.command_wait, then keyed by that span)", id))
						e.Events = append(e.Events, id)
						continue
					}
					if ev == keyOfSpan(pk.trace, pk.span) {
						e.Events = append(e.Events, id)
					} else {
						e.Events = append(e.Events, producerIDs[pk])
					}
				} else {
					e.Events = append(e.Events, f.DisplayID())
				}
				if !appended[ev] {
					waits = append(waits, fmt.Sprintf("the append of event %s is not in the input (held join.deadline + join.command_wait, then evicted: reason orphan_expired)", e.Events[len(e.Events)-1]))
				}
			}
			e.Waits = strings.Join(waits, "; ")
		}
		out = append(out, e)
	}
	return out, nil
}
