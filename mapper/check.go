package mapper

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/expr-lang/expr/ast"
)

// tableRE is the form of a table name the relay can watch: an unquoted
// PostgreSQL identifier as the server stores it (folded to lower case), at
// most 63 bytes (NAMEDATALEN-1; PostgreSQL cuts longer names).
var tableRE = regexp.MustCompile(`^[a-z_][a-z0-9_$]{0,62}$`)

// checkTable says why name cannot be a table of schema public that the
// relay watches, or returns nil.
func checkTable(name string) error {
	switch {
	case tableRE.MatchString(name):
		return nil
	case strings.Contains(name, ".") && tableRE.MatchString(name[strings.LastIndex(name, ".")+1:]):
		return fmt.Errorf("%q is schema-qualified; write the table's name alone (%s): the relay watches tables of schema public",
			name, name[strings.LastIndex(name, ".")+1:])
	case tableRE.MatchString(strings.ToLower(name)):
		return fmt.Errorf("%q: PostgreSQL folds unquoted names to lower case; write %q", name, strings.ToLower(name))
	case len(name) > 63:
		return fmt.Errorf("%d bytes is longer than a PostgreSQL name can be (63)", len(name))
	}
	return fmt.Errorf("%q cannot be a table name: use lower-case letters, digits, _ and $, not starting with a digit", name)
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
