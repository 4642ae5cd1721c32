package service_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/smartmaintenance/relay/admin"
	"github.com/smartmaintenance/relay/config"
)

// adminAPI is the admin API of a relay under test, reached with a company
// admin's token of company 1.
type adminAPI struct {
	t     *testing.T
	addr  string
	token string
}

// withAdminAPI turns on the admin API of the relay e starts, on a free
// local port, with a token of company 1 and a secrets key.
func (e *relayEnv) withAdminAPI() *adminAPI {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const token = "service-test-admin-token"
	e.cfg.Admin = config.Admin{Listen: addr, Tokens: []config.AdminToken{{Name: "t", CompanyID: 1, TokenSHA256: admin.TokenHash(token)}}}
	e.cfg.Secrets.Key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	return &adminAPI{t: e.t, addr: addr, token: token}
}

// do sends body as JSON and returns the status and the raw answer.
func (a *adminAPI) do(method, path string, body any) (int, []byte) {
	a.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+a.addr+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+a.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

// call is do with the answer decoded as a JSON object.
func (a *adminAPI) call(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	status, out := a.do(method, path, body)
	var m map[string]any
	_ = json.Unmarshal(out, &m)
	return status, m
}
