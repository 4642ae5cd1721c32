package mapper

import (
	"errors"
	"fmt"
	"slices"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// The names an expression can use besides expr's builtins.
const (
	envNew   = "new"
	envOld   = "old"
	envOp    = "op"
	envTable = "table"
)

// exprOptions are shared by every compiled expression. The environment is a
// map, whose names expr loads without reflection; new and old are maps, so a
// missing column reads as nil. now() is disabled: a payload must come out
// the same when a transaction is mapped again after a restart.
var exprOptions = []expr.Option{
	expr.Env(map[string]any{
		envNew:   map[string]any{},
		envOld:   map[string]any{},
		envOp:    "",
		envTable: "",
	}),
	expr.DisableBuiltin("now"),
}

// refs are the columns an expression reads as new.<col> and old.<col>.
type refs struct {
	new, old []string // sorted, unique
}

// compile compiles src and finds the columns it reads. asBool makes the
// compiler reject expressions that cannot be boolean.
func compile(src string, asBool bool) (*vm.Program, refs, error) {
	opts := exprOptions
	if asBool {
		opts = append(slices.Clip(opts), expr.AsBool())
	}
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, refs{}, exprError(err)
	}
	tree, err := parser.Parse(src)
	if err != nil { // cannot happen: Compile parsed it
		return nil, refs{}, exprError(err)
	}
	if asBool && notBool(tree.Node) {
		return nil, refs{}, errors.New("the result is not true or false (it is a number, a text or a list); write a condition such as new.count > 0")
	}
	v := &refVisitor{allowed: make(map[*ast.IdentifierNode]bool)}
	ast.Walk(&tree.Node, v)
	if v.err != nil {
		return nil, refs{}, v.err
	}
	for _, id := range v.olds {
		if !v.allowed[id] {
			return nil, refs{}, errors.New(`old can be read only as old.<column> or old["column"] (the relay records exactly the columns read that way)`)
		}
	}
	slices.Sort(v.refs.new)
	slices.Sort(v.refs.old)
	return prog, refs{new: slices.Compact(v.refs.new), old: slices.Compact(v.refs.old)}, nil
}

// plainColumn reports whether src only reads one column, as new.<col>,
// new["col"] or new?.<col> (or the same of old), and which. Such a
// payload field is read from the row directly: the VM would load the row
// and fetch the column through reflection, which returns the same value
// (nil for a column the row lacks) and costs an allocation. src must
// have compiled.
func plainColumn(src string) (col string, old, ok bool) {
	tree, err := parser.Parse(src)
	if err != nil {
		return "", false, false
	}
	node := tree.Node
	if ch, isChain := node.(*ast.ChainNode); isChain { // new?.<col>
		node = ch.Node
	}
	m, isMember := node.(*ast.MemberNode)
	if !isMember || m.Method {
		return "", false, false
	}
	base, isIdent := m.Node.(*ast.IdentifierNode)
	name, isString := m.Property.(*ast.StringNode)
	if !isIdent || !isString || base.Value != envNew && base.Value != envOld {
		return "", false, false
	}
	return name.Value, base.Value == envOld, true
}

// refVisitor collects column references. ast.Walk visits children before
// their parent, so identifiers named old are collected first and checked
// after the walk against those that are the base of a constant member access.
type refVisitor struct {
	refs    refs
	olds    []*ast.IdentifierNode
	allowed map[*ast.IdentifierNode]bool
	err     error
}

func (v *refVisitor) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch n.Value {
		case envOld:
			v.olds = append(v.olds, n)
		case "$env":
			v.fail(errors.New("$env is not supported: read new, old, op and table directly"))
		}
	case *ast.MemberNode:
		// new.col, new["col"], new?.col; the same for old.
		v.column(n.Node, n.Property)
	case *ast.BinaryNode:
		// "col" in new: whether the column is known.
		if n.Operator == "in" {
			v.column(n.Right, n.Left)
		}
	}
}

func (v *refVisitor) column(base, name ast.Node) {
	id, ok := base.(*ast.IdentifierNode)
	if !ok {
		return
	}
	col, ok := name.(*ast.StringNode)
	if !ok {
		return
	}
	switch id.Value {
	case envNew:
		v.refs.new = append(v.refs.new, col.Value)
	case envOld:
		v.refs.old = append(v.refs.old, col.Value)
		v.allowed[id] = true
	}
}

func (v *refVisitor) fail(err error) {
	if v.err == nil {
		v.err = err
	}
}

// exprError shortens expr's errors to one line: the message and, when known,
// the position (line:column) in the expression.
func exprError(err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err
	}
	if fe.Snippet != "" { // positioned, as expr's own message would be
		return fmt.Errorf("%s (%d:%d)", fe.Message, fe.Line, fe.Column+1)
	}
	return errors.New(fe.Message)
}

// notBool reports whether an expression that expr's checker let through as
// a possible boolean (its type is unknown because it reads new or old) is
// still certain not to be one, from its shape: arithmetic, a negation, a
// literal, or a choice between such values. Such a When would fail on
// every change, so New refuses it.
func notBool(n ast.Node) bool {
	switch x := n.(type) {
	case *ast.BinaryNode:
		switch x.Operator {
		case "+", "-", "*", "/", "%", "**", "^", "..":
			return true
		case "??":
			return notBool(x.Left) && notBool(x.Right)
		}
	case *ast.UnaryNode:
		return x.Operator == "-" || x.Operator == "+"
	case *ast.ConditionalNode:
		return notBool(x.Exp1) && notBool(x.Exp2)
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.ArrayNode, *ast.MapNode, *ast.NilNode, *ast.SliceNode:
		return true
	}
	return false
}
