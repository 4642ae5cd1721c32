package mapper

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// A webhook's filter is a condition over the event it would be sent, in
// the language of the rules' conditions: it reads the payload's top-level
// fields (event, company_id, company_name, timestamp) and its data fields
// as data.<name>, e.g.
//
//	event == "repair_request.created" && data.priority == "critical"
//
// The relay sends the webhook only the events for which it is true.

// The names a filter can use.
const (
	filterEvent       = "event"
	filterCompanyID   = "company_id"
	filterCompanyName = "company_name"
	filterTimestamp   = "timestamp"
	filterData        = "data"
)

var filterOptions = []expr.Option{
	expr.Env(map[string]any{
		filterEvent:       "",
		filterCompanyID:   int64(0),
		filterCompanyName: "",
		filterTimestamp:   "",
		filterData:        map[string]any{},
	}),
	expr.DisableBuiltin("now"),
	// A filter runs on every event its webhook's company fires, in the
	// change feed's path: its cost must stay small whatever an admin
	// writes. repeat makes lists as long as asked from nothing.
	expr.DisableBuiltin("repeat"),
	expr.AsBool(),
}

// The bounds of a filter's work: only the functions of filterFunctions,
// at most maxFilterLoops predicates (all(list, {...}), any, count, ...),
// none inside another's {...} (nested ones cost the product of their
// lists' lengths), patterns of matches written in the filter, no variables (let a = ...; which a chain of
// a = a + a; doubles at every step) and no ranges (1..n), and lists the
// filter makes itself (literals) within filterMemory elements in all. A
// filter's work then grows with its own length and the event's data, and
// with nothing else.
const (
	maxFilterLoops = 8
	filterMemory   = 10_000
)

// filterFunctions are the functions a filter may call: predicates over a
// list, and functions whose result is no larger than their arguments.
// Those that build large values from small ones (repeat, replace, join,
// map, reduce, split, ...) are not among them.
var filterFunctions = map[string]bool{
	"all": true, "any": true, "none": true, "one": true, "filter": true, "count": true,
	"find": true, "findIndex": true, "findLast": true, "findLastIndex": true,
	"len": true, "type": true, "abs": true, "ceil": true, "floor": true, "round": true,
	"int": true, "float": true, "string": true, "trim": true, "trimPrefix": true, "trimSuffix": true,
	"upper": true, "lower": true, "indexOf": true, "lastIndexOf": true, "hasPrefix": true, "hasSuffix": true,
	"max": true, "min": true, "sum": true, "duration": true, "date": true,
	"first": true, "last": true, "get": true, "keys": true, "values": true,
}

// filterVMs are the machines filters run on, each with the filters'
// memory budget; a machine runs one program at a time.
var filterVMs = sync.Pool{New: func() any { return &vm.VM{MemoryBudget: filterMemory} }}

// Filter is a compiled webhook filter. It is safe for concurrent use.
type Filter struct {
	src  string
	prog *vm.Program
	data []string
}

// String returns the filter's source.
func (f *Filter) String() string { return f.src }

// DataFields returns, sorted, the fields of data the filter reads by name
// (data.priority, data["priority"]).
func (f *Filter) DataFields() []string { return f.data }

// CompileFilter compiles a webhook filter. fields names the data fields of
// each event type the webhook is subscribed to (nil: do not check data
// fields): a filter that reads data.<name> when none of them has that field
// is refused, since it could never see a value. Errors are one line and
// give the position (line:column) of the mistake where expr knows it, e.g.
//
//	unknown name priority (1:1)
func CompileFilter(src string, fields map[string][]string) (*Filter, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	prog, err := expr.Compile(src, filterOptions...)
	if err != nil {
		if msg := err.Error(); strings.HasPrefix(msg, "expected bool, but got ") {
			// A value whose type the checker knows (company_id + 1, a text).
			return nil, errors.New("the result is not true or false (" + msg + "); " + writeCondition)
		}
		return nil, exprError(err)
	}
	tree, err := parser.Parse(src)
	if err != nil { // cannot happen: Compile parsed it
		return nil, exprError(err)
	}
	if notBool(tree.Node) {
		return nil, errors.New("the result is not true or false (it is a number, a text or a list); " + writeCondition)
	}
	v := &filterVisitor{fields: fields, src: src}
	ast.Walk(&tree.Node, v)
	if v.err != nil {
		return nil, v.err
	}
	if v.loops > maxFilterLoops {
		return nil, fmt.Errorf("%d predicates ({...}) is too many; a filter may use at most %d", v.loops, maxFilterLoops)
	}
	slices.Sort(v.read)
	return &Filter{src: src, prog: prog, data: slices.Compact(v.read)}, nil
}

// writeCondition ends the error of a filter that is not a condition.
const writeCondition = `write a condition such as data.priority == "critical"`

// filterVisitor checks the names a filter reads, and counts its
// predicates, refusing one inside another.
type filterVisitor struct {
	fields map[string][]string
	src    string
	err    error
	loops  int
	read   []string // the data fields read by name
}

func (v *filterVisitor) Visit(node *ast.Node) {
	if v.err != nil {
		return
	}
	switch n := (*node).(type) {
	case *ast.VariableDeclaratorNode:
		v.err = v.at(n, "variables (let) are not supported in filters")
	case *ast.SequenceNode:
		v.err = v.at(n, "sequences (;) are not supported in filters")
	case *ast.BinaryNode:
		switch n.Operator {
		case "..":
			v.err = v.at(n, "ranges (a..b) are not supported in filters")
		case "matches":
			// A constant pattern is compiled once, with the filter; one read
			// from the event would be compiled for every event.
			if _, ok := n.Right.(*ast.StringNode); !ok {
				v.err = v.at(n, `the pattern of matches must be a text in quotes (data.title matches "^Pump")`)
			}
		}
	case *ast.BuiltinNode:
		v.function(n, n.Name)
	case *ast.CallNode:
		if id, ok := n.Callee.(*ast.IdentifierNode); ok {
			v.function(n, id.Value)
		}
	case *ast.PredicateNode:
		v.loops++
		var inner closureFinder
		ast.Walk(&n.Node, &inner)
		if inner.found != nil {
			v.err = v.at(inner.found, "a predicate ({...}) inside another one's {...} is not supported in filters: its cost is the product of the lists' lengths")
		}
	case *ast.IdentifierNode:
		if n.Value == "$env" {
			v.err = v.at(n, "$env is not supported: read event, company_id, company_name, timestamp and data directly")
		}
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok || id.Value != filterData {
			return
		}
		name, ok := n.Property.(*ast.StringNode)
		if !ok {
			return
		}
		v.read = append(v.read, name.Value)
		if v.fields == nil {
			return
		}
		var all []string
		for _, fs := range v.fields {
			if slices.Contains(fs, name.Value) {
				return
			}
			all = append(all, fs...)
		}
		slices.Sort(all)
		all = slices.Compact(all)
		if len(all) == 0 {
			v.err = v.at(id, fmt.Sprintf("unknown field data.%s: the subscribed events have no data fields", name.Value))
			return
		}
		v.err = v.at(id, fmt.Sprintf("unknown field data.%s: the subscribed events have %s", name.Value, "data."+strings.Join(all, ", data.")))
	}
}

// function refuses a call of a function filters may not use.
func (v *filterVisitor) function(n ast.Node, name string) {
	if !filterFunctions[name] {
		v.err = v.at(n, name+" is not supported in filters")
	}
}

// closureFinder finds a predicate in the tree it walks.
type closureFinder struct{ found ast.Node }

func (c *closureFinder) Visit(node *ast.Node) {
	if n, ok := (*node).(*ast.PredicateNode); ok && c.found == nil {
		c.found = n
	}
}

// at is msg with the position of n in the filter, as exprError writes it.
func (v *filterVisitor) at(n ast.Node, msg string) error {
	fe := &file.Error{Location: n.Location(), Message: msg}
	return exprError(fe.Bind(file.NewSource(v.src)))
}

// filterPayload is what a filter reads of a payload.
type filterPayload struct {
	Event       string         `json:"event"`
	CompanyID   int64          `json:"company_id"`
	CompanyName string         `json:"company_name"`
	Timestamp   string         `json:"timestamp"`
	Data        map[string]any `json:"data"`
}

// FilterEnv is a payload decoded for filters: decode it once and match it
// against every filter that applies.
type FilterEnv map[string]any

// NewFilterEnv decodes an event's payload (as Map builds it) for Match.
func NewFilterEnv(payload []byte) (FilterEnv, error) {
	var p filterPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("decode payload for filters: %w", err)
	}
	if p.Data == nil {
		p.Data = map[string]any{}
	}
	return FilterEnv{
		filterEvent:       p.Event,
		filterCompanyID:   p.CompanyID,
		filterCompanyName: p.CompanyName,
		filterTimestamp:   p.Timestamp,
		filterData:        p.Data,
	}, nil
}

// Match reports whether the event passes the filter. An error (a value of
// an unexpected type, say) is no match.
func (f *Filter) Match(env FilterEnv) (bool, error) {
	m := filterVMs.Get().(*vm.VM)
	out, err := m.Run(f.prog, map[string]any(env))
	filterVMs.Put(m)
	if err != nil {
		return false, exprError(err)
	}
	ok, _ := out.(bool)
	return ok, nil
}
