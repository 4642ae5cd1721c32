package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/smartmaintenance/relay/config"
	"github.com/smartmaintenance/relay/store"
)

// principal is who a request acts as.
type principal struct {
	name string
	// company is the one company a company token manages; operators have
	// store.AllCompanies.
	company  int64
	operator bool
}

// credential is a configured token, known by its hash.
type credential struct {
	hash [sha256.Size]byte
	who  principal
}

func credentials(tokens []config.AdminToken) []credential {
	out := make([]credential, 0, len(tokens))
	for _, t := range tokens {
		b, err := hex.DecodeString(strings.ToLower(strings.TrimSpace(t.TokenSHA256)))
		if err != nil || len(b) != sha256.Size {
			continue // config.Validate refuses these
		}
		c := credential{who: principal{name: t.Name, company: t.CompanyID, operator: t.Operator}}
		copy(c.hash[:], b)
		if t.Operator {
			c.who.company = store.AllCompanies
		}
		out = append(out, c)
	}
	return out
}

// SetTokens replaces the tokens the API accepts. Requests that start after
// it returns are checked against the new tokens only, so a revoked token is
// refused at once.
func (s *Server) SetTokens(tokens []config.AdminToken) {
	creds := credentials(tokens)
	s.creds.Store(&creds)
}

// authenticate finds the principal of a request's bearer token. Every
// configured hash is compared, in constant time, whatever matches.
func (s *Server) authenticate(r *http.Request) (principal, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return principal{}, false
	}
	return s.byHash(sha256.Sum256([]byte(strings.TrimSpace(token))))
}

// byHash finds the principal of a token's SHA-256 among the tokens
// configured now. Every configured hash is compared, in constant time,
// whatever matches.
func (s *Server) byHash(sum [sha256.Size]byte) (principal, bool) {
	var found principal
	matched := 0
	for _, c := range *s.creds.Load() {
		if subtle.ConstantTimeCompare(sum[:], c.hash[:]) == 1 {
			found = c.who
			matched = 1
		}
	}
	return found, matched == 1
}

// TokenHash returns the hex SHA-256 of a token, as admin.tokens[].token_sha256
// holds it.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
