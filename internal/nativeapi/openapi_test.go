package nativeapi

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/events"
)

// The document is hand-written (openapi.json); these tests hold it against
// the code so that neither can drift: the routes table, the parameters and
// headers the handlers read, the success and error statuses they answer,
// and the apiv1 wire types.

// ---- reading the document

type oaDoc struct {
	t    *testing.T
	root map[string]any
}

type oaOp struct {
	method, path string // method in upper case, path as in the document
	pathItem, op map[string]any
}

func (o oaOp) String() string { return o.method + " " + o.path }

var oaMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

func loadOpenAPI(t *testing.T) *oaDoc {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal(OpenAPI(), &root); err != nil {
		t.Fatalf("the OpenAPI document is not JSON: %v", err)
	}
	return &oaDoc{t: t, root: root}
}

func asMap(v any) map[string]any { m, _ := v.(map[string]any); return m }

func asStrings(v any) []string {
	var out []string
	for _, e := range asSlice(v) {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// pointer resolves a local reference such as "#/components/schemas/Item".
func (d *oaDoc) pointer(ref string) (any, bool) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, false
	}
	var cur any = d.root
	for _, tok := range strings.Split(rest, "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// deref follows $ref until it reaches an object without one.
func (d *oaDoc) deref(v any) map[string]any {
	d.t.Helper()
	m := asMap(v)
	for i := 0; m != nil && i < 10; i++ {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		target, ok := d.pointer(ref)
		if !ok {
			d.t.Fatalf("$ref %q does not resolve", ref)
		}
		m = asMap(target)
	}
	return m
}

func (d *oaDoc) schema(name string) map[string]any {
	return asMap(asMap(asMap(d.root["components"])["schemas"])[name])
}

func (d *oaDoc) operations() []oaOp {
	var ops []oaOp
	paths := asMap(d.root["paths"])
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		item := asMap(paths[p])
		for _, m := range oaMethods {
			if op := asMap(item[m]); op != nil {
				ops = append(ops, oaOp{method: strings.ToUpper(m), path: p, pathItem: item, op: op})
			}
		}
	}
	return ops
}

func (d *oaDoc) operation(method, path string) (oaOp, bool) {
	item := asMap(asMap(d.root["paths"])[path])
	op := asMap(item[strings.ToLower(method)])
	return oaOp{method: method, path: path, pathItem: item, op: op}, op != nil
}

// params are an operation's parameters, the path item's included.
func (d *oaDoc) params(o oaOp) []map[string]any {
	var out []map[string]any
	for _, p := range append(slices.Clone(asSlice(o.pathItem["parameters"])), asSlice(o.op["parameters"])...) {
		out = append(out, d.deref(p))
	}
	return out
}

func (d *oaDoc) paramNames(o oaOp, in string) []string {
	var out []string
	for _, p := range d.params(o) {
		if p["in"] == in {
			out = append(out, p["name"].(string))
		}
	}
	slices.Sort(out)
	return out
}

func (d *oaDoc) responses(o oaOp) map[string]map[string]any {
	out := map[string]map[string]any{}
	for code, r := range asMap(o.op["responses"]) {
		out[code] = d.deref(r)
	}
	return out
}

// openapiPath turns a ServeMux pattern into an OpenAPI path template:
// "{id}" stays, "{rest...}" becomes "{rest}", "{$}" goes.
func openapiPath(pattern string) string {
	return strings.ReplaceAll(strings.ReplaceAll(pattern, "{$}", ""), "...}", "}")
}

var templateParamRe = regexp.MustCompile(`\{([^}]+)\}`)

func templateParams(path string) []string {
	var out []string
	for _, m := range templateParamRe.FindAllStringSubmatch(path, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return out
}

func sortedSet(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// ---- reading the handlers

// handlerUse is what a handler reads from its request and writes to its
// answer, found in its source and in the package functions it calls.
type handlerUse struct {
	query, headers, pathValues []string
	successStatuses            []int    // the 2xx http.Status constants it uses
	setHeaders                 []string // w.Header().Set names
}

var successStatus = map[string]int{
	"StatusOK": http.StatusOK, "StatusCreated": http.StatusCreated,
	"StatusAccepted": http.StatusAccepted, "StatusNoContent": http.StatusNoContent,
}

// packageFuncs parses the package's non-test sources: functions and
// methods by name.
func packageFuncs(t *testing.T) map[string]*ast.FuncDecl {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	funcs := map[string]*ast.FuncDecl{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", f, err)
		}
		for _, decl := range file.Decls {
			if fd, ok := decl.(*ast.FuncDecl); ok {
				funcs[fd.Name.Name] = fd
			}
		}
	}
	return funcs
}

func handlerName(h handler) string {
	name := runtime.FuncForPC(reflect.ValueOf(h).Pointer()).Name()
	name = strings.TrimSuffix(name, "-fm")
	return name[strings.LastIndex(name, ".")+1:]
}

func stringArg(call *ast.CallExpr, i int) (string, bool) {
	if len(call.Args) <= i {
		return "", false
	}
	lit, ok := call.Args[i].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func readHandler(funcs map[string]*ast.FuncDecl, name string) handlerUse {
	var u handlerUse
	seen := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		fd, ok := funcs[name]
		if !ok || seen[name] || fd.Body == nil {
			return
		}
		seen[name] = true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if x, ok := n.X.(*ast.Ident); ok && x.Name == "http" {
					if code, ok := successStatus[n.Sel.Name]; ok {
						u.successStatuses = append(u.successStatuses, code)
					}
				}
			case *ast.CallExpr:
				switch fun := n.Fun.(type) {
				case *ast.Ident: // a package function
					visit(fun.Name)
				case *ast.SelectorExpr:
					recv := types.ExprString(fun.X)
					arg, lit := stringArg(n, 0)
					switch {
					case recv == "a": // a method of *API
						visit(fun.Sel.Name)
					case !lit:
					case fun.Sel.Name == "PathValue":
						u.pathValues = append(u.pathValues, arg)
					case fun.Sel.Name == "Get" && recv == "r.Header":
						u.headers = append(u.headers, arg)
					case fun.Sel.Name == "Get" && (recv == "q" || strings.HasSuffix(recv, "URL.Query()")):
						u.query = append(u.query, arg)
					case fun.Sel.Name == "Set" && recv == "w.Header()":
						u.setHeaders = append(u.setHeaders, arg)
					}
				}
			}
			return true
		})
	}
	visit(name)
	u.query, u.headers, u.pathValues = sortedSet(u.query), sortedSet(u.headers), sortedSet(u.pathValues)
	u.setHeaders = sortedSet(u.setHeaders)
	slices.Sort(u.successStatuses)
	u.successStatuses = slices.Compact(u.successStatuses)
	return u
}

// ---- the tests

func TestOpenAPIIsAnOpenAPI310JSONDocument(t *testing.T) {
	d := loadOpenAPI(t)
	if v := d.root["openapi"]; v != "3.1.0" {
		t.Errorf("openapi = %v, want 3.1.0", v)
	}
	info := asMap(d.root["info"])
	if info["title"] == "" || info["title"] == nil || info["version"] == "" || info["version"] == nil {
		t.Errorf("info needs a title and a version: %v", info)
	}
	ops := d.operations()
	if len(ops) == 0 {
		t.Fatal("the document has no operations")
	}
	ids := map[string]string{}
	for _, o := range ops {
		id, _ := o.op["operationId"].(string)
		if id == "" {
			t.Errorf("%s: no operationId", o)
		} else if prev, dup := ids[id]; dup {
			t.Errorf("%s: operationId %q already used by %s", o, id, prev)
		}
		ids[id] = o.String()
		if len(asMap(o.op["responses"])) == 0 {
			t.Errorf("%s: no responses", o)
		}
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	d := loadOpenAPI(t)
	for _, rt := range (&API{}).Routes() {
		o, ok := d.operation(rt.Method, openapiPath(rt.Pattern))
		if !ok {
			t.Errorf("route %s %s is not in the OpenAPI document", rt.Method, rt.Pattern)
			continue
		}
		tmpl := templateParams(o.path)
		if got := d.paramNames(o, "path"); !slices.Equal(got, tmpl) {
			t.Errorf("%s: path parameters %v, want %v", o, got, tmpl)
		}
		for _, p := range d.params(o) {
			if p["in"] == "path" && p["required"] != true {
				t.Errorf("%s: path parameter %v must be required", o, p["name"])
			}
		}
	}
}

// Every documented /v1 operation must be served by the pattern of the same
// method and path: a route of Routes(), or GET /v1/openapi.json, which
// Register adds itself. The catch-all "/v1/" does not count.
func TestOpenAPIDocumentsOnlyRoutesTheServerHas(t *testing.T) {
	d := loadOpenAPI(t)
	mux := http.NewServeMux()
	(&API{}).Register(mux)
	inTable := map[string]bool{}
	for _, rt := range (&API{}).Routes() {
		inTable[rt.Method+" "+openapiPath(rt.Pattern)] = true
	}
	// Served by internal/server, which this package cannot import.
	outside := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}
	for _, o := range d.operations() {
		if !strings.HasPrefix(o.path, "/v1/") {
			if !outside[o.String()] {
				t.Errorf("%s is documented but is neither a /v1 route nor a known service endpoint", o)
			}
			continue
		}
		sample := templateParamRe.ReplaceAllString(o.path, "x1")
		_, pattern := mux.Handler(httptest.NewRequest(o.method, sample, nil))
		if pattern != o.String() {
			t.Errorf("%s is documented but the server routes %s %s to %q", o, o.method, sample, pattern)
		}
		if !inTable[o.String()] && o.String() != "GET /v1/openapi.json" {
			t.Errorf("%s is documented but is not in (*API).Routes()", o)
		}
	}
}

func TestOpenAPIParametersAreWhatHandlersRead(t *testing.T) {
	d := loadOpenAPI(t)
	funcs := packageFuncs(t)
	for _, rt := range (&API{}).Routes() {
		o, ok := d.operation(rt.Method, openapiPath(rt.Pattern))
		if !ok {
			continue // TestOpenAPIDocumentsEveryRoute reports it
		}
		name := handlerName(rt.Handle)
		if _, ok := funcs[name]; !ok {
			t.Errorf("%s: cannot find the source of handler %s", o, name)
			continue
		}
		u := readHandler(funcs, name)
		if got := d.paramNames(o, "query"); !slices.Equal(got, u.query) {
			t.Errorf("%s: documented query parameters %v, handler %s reads %v", o, got, name, u.query)
		}
		// X-Request-Id is read by the middleware, for every path. OpenAPI
		// describes Content-Type, Accept and Authorization elsewhere (the
		// request body's media types, security), never as parameters.
		got := slices.DeleteFunc(d.paramNames(o, "header"), func(s string) bool { return s == "X-Request-Id" })
		read := slices.DeleteFunc(slices.Clone(u.headers), func(s string) bool {
			return s == "Content-Type" || s == "Accept" || s == "Authorization"
		})
		if !slices.Equal(got, read) {
			t.Errorf("%s: documented header parameters %v, handler %s reads %v", o, got, name, read)
		}
		if got := d.paramNames(o, "path"); !slices.Equal(got, u.pathValues) {
			t.Errorf("%s: documented path parameters %v, handler %s reads %v", o, got, name, u.pathValues)
		}
	}
}

// Each route documents exactly the success status its handler answers,
// with the headers it sets; DELETEs answer 204 without a body.
func TestOpenAPISuccessAnswersAreWhatHandlersAnswer(t *testing.T) {
	d := loadOpenAPI(t)
	funcs := packageFuncs(t)
	for _, rt := range (&API{}).Routes() {
		o, ok := d.operation(rt.Method, openapiPath(rt.Pattern))
		if !ok {
			continue
		}
		u := readHandler(funcs, handlerName(rt.Handle))
		if len(u.successStatuses) != 1 {
			t.Errorf("%s: cannot tell the handler's success status (found %v)", o, u.successStatuses)
			continue
		}
		want := strconv.Itoa(u.successStatuses[0])
		resps := d.responses(o)
		var documented []string
		for code := range resps {
			if strings.HasPrefix(code, "2") {
				documented = append(documented, code)
			}
		}
		if !slices.Equal(documented, []string{want}) {
			t.Errorf("%s: documented success %v, handler answers %s", o, documented, want)
			continue
		}
		success := resps[want]
		for _, h := range u.setHeaders {
			if h == "Content-Type" || h == "X-Accel-Buffering" { // the media type; a hint to reverse proxies
				continue
			}
			if _, ok := asMap(success["headers"])[h]; !ok {
				t.Errorf("%s: the handler sets %s but the %s answer does not document it", o, h, want)
			}
		}
		if want == "204" && success["content"] != nil {
			t.Errorf("%s: a 204 answer has no body", o)
		}
		if want != "204" && len(asMap(success["content"])) == 0 {
			t.Errorf("%s: the %s answer documents no body", o, want)
		}
	}
}

func TestOpenAPIAsyncRequestsAnswer202WithLocation(t *testing.T) {
	d := loadOpenAPI(t)
	for _, path := range []string{"/v1/password-resets", "/v1/power-actions"} {
		o, ok := d.operation("POST", path)
		if !ok {
			t.Errorf("POST %s is not documented", path)
			continue
		}
		r := d.responses(o)["202"]
		if r == nil {
			t.Errorf("%s: no 202 answer", o)
			continue
		}
		if _, ok := asMap(r["headers"])["Location"]; !ok {
			t.Errorf("%s: the 202 answer has no Location header", o)
		}
		if ref := asMap(asMap(asMap(r["content"])["application/json"])["schema"])["$ref"]; ref != "#/components/schemas/Operation" {
			t.Errorf("%s: the 202 answer's body is %v, want the Operation", o, ref)
		}
		if !slices.Contains(d.paramNames(o, "header"), "Idempotency-Key") {
			t.Errorf("%s: no Idempotency-Key header", o)
		}
	}
}

func TestOpenAPIRefsResolve(t *testing.T) {
	d := loadOpenAPI(t)
	n := 0
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				n++
				if _, ok := d.pointer(ref); !ok {
					t.Errorf("%s: $ref %q does not resolve", where, ref)
				}
			}
			for k, e := range v {
				walk(where+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(where+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", d.root)
	if n == 0 {
		t.Error("the document has no $ref at all")
	}
}

// mirroredTypes are the apiv1 types with a schema of the same name.
var mirroredTypes = map[string]reflect.Type{
	"Instance":        reflect.TypeFor[apiv1.Instance](),
	"InstanceCreate":  reflect.TypeFor[apiv1.InstanceCreate](),
	"InstanceList":    reflect.TypeFor[apiv1.InstanceList](),
	"PasswordReset":   reflect.TypeFor[apiv1.PasswordReset](),
	"PowerAction":     reflect.TypeFor[apiv1.PowerAction](),
	"Operation":       reflect.TypeFor[apiv1.Operation](),
	"OperationList":   reflect.TypeFor[apiv1.OperationList](),
	"Item":            reflect.TypeFor[apiv1.Item](),
	"Summary":         reflect.TypeFor[apiv1.Summary](),
	"Requester":       reflect.TypeFor[apiv1.Requester](),
	"Key":             reflect.TypeFor[apiv1.Key](),
	"KeyCreate":       reflect.TypeFor[apiv1.KeyCreate](),
	"KeyCreated":      reflect.TypeFor[apiv1.KeyCreated](),
	"KeyList":         reflect.TypeFor[apiv1.KeyList](),
	"Tenant":          reflect.TypeFor[apiv1.Tenant](),
	"TenantCreate":    reflect.TypeFor[apiv1.TenantCreate](),
	"TenantList":      reflect.TypeFor[apiv1.TenantList](),
	"AuditEntry":      reflect.TypeFor[apiv1.AuditEntry](),
	"AuditList":       reflect.TypeFor[apiv1.AuditList](),
	"Event":           reflect.TypeFor[apiv1.Event](),
	"ItemEvent":       reflect.TypeFor[apiv1.ItemEvent](),
	"ErrorBody":       reflect.TypeFor[apiv1.ErrorBody](),
	"Error":           reflect.TypeFor[apiv1.Error](),
	"DriverLink":      reflect.TypeFor[apiv1.DriverLink](),
	"LatestOperation": reflect.TypeFor[apiv1.LatestOperation](),
	"BMCStatus":       reflect.TypeFor[apiv1.BMCStatus](),
	"BMCCredentials":  reflect.TypeFor[apiv1.BMCCredentials](),
	"BMCUpdate":       reflect.TypeFor[apiv1.BMCUpdate](),
}

// requestTypes are only ever sent by clients: a field the server can do
// without may be optional even if Go always encodes it.
var requestTypes = map[string]bool{
	"InstanceCreate": true, "PasswordReset": true, "PowerAction": true, "KeyCreate": true, "TenantCreate": true,
	"BMCCredentials": true, "BMCUpdate": true,
}

type jsonField struct {
	name      string
	omitempty bool
	typ       reflect.Type
}

// jsonFields lists the JSON members of a struct as encoding/json sees
// them, embedded structs' members included.
func jsonFields(rt reflect.Type) []jsonField {
	var out []jsonField
	for f := range rt.Fields() {
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		omit := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		out = append(out, jsonField{name: name, omitempty: omit, typ: ft})
	}
	return out
}

// schemaProperties collects a schema's properties and required names,
// through allOf.
func (d *oaDoc) schemaProperties(s map[string]any, props map[string]any, required map[string]bool) {
	for k, v := range asMap(s["properties"]) {
		props[k] = v
	}
	for _, r := range asStrings(s["required"]) {
		required[r] = true
	}
	for _, sub := range asSlice(s["allOf"]) {
		d.schemaProperties(d.deref(sub), props, required)
	}
}

// checkType holds a property schema against the Go type of its field.
func (d *oaDoc) checkType(t *testing.T, where string, prop any, ft reflect.Type) {
	t.Helper()
	if ft.Kind() == reflect.Pointer {
		ft = ft.Elem()
	}
	if ft == reflect.TypeFor[time.Time]() {
		s := d.deref(prop)
		if s["type"] != "string" || s["format"] != "date-time" {
			t.Errorf("%s: a time is a string of format date-time, got %v/%v", where, s["type"], s["format"])
		}
		return
	}
	if ft.Kind() == reflect.Struct {
		want := "#/components/schemas/" + ft.Name()
		if ref := asMap(prop)["$ref"]; ref != want {
			t.Errorf("%s: want $ref %s for %s, got %v", where, want, ft, ref)
		}
		if _, ok := mirroredTypes[ft.Name()]; !ok {
			t.Errorf("%s: %s has no schema checked against it", where, ft)
		}
		return
	}
	s := d.deref(prop)
	var want string
	switch ft.Kind() {
	case reflect.String:
		want = "string"
	case reflect.Bool:
		want = "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		want = "integer"
	case reflect.Float32, reflect.Float64:
		want = "number"
	case reflect.Slice, reflect.Array:
		want = "array"
		d.checkType(t, where+"[]", s["items"], ft.Elem())
	case reflect.Map:
		want = "object"
	case reflect.Interface:
		return
	default:
		t.Errorf("%s: no JSON Schema type known for %s", where, ft)
		return
	}
	if s["type"] != want {
		t.Errorf("%s: type %v, want %s (Go %s)", where, s["type"], want, ft)
	}
}

func TestOpenAPISchemasMirrorAPIv1Types(t *testing.T) {
	d := loadOpenAPI(t)
	for _, name := range slices.Sorted(maps.Keys(mirroredTypes)) {
		rt := mirroredTypes[name]
		s := d.schema(name)
		if s == nil {
			t.Errorf("components/schemas/%s is missing", name)
			continue
		}
		if s["type"] != "object" {
			t.Errorf("%s: type %v, want object", name, s["type"])
		}
		props, required := map[string]any{}, map[string]bool{}
		d.schemaProperties(s, props, required)
		fields := jsonFields(rt)
		var names, mustHave []string
		for _, f := range fields {
			names = append(names, f.name)
			if !f.omitempty {
				mustHave = append(mustHave, f.name)
			}
		}
		if got, want := slices.Sorted(maps.Keys(props)), sortedSet(names); !slices.Equal(got, want) {
			t.Errorf("%s: properties %v, want the JSON fields of apiv1.%s %v", name, got, rt.Name(), want)
		}
		for _, f := range fields {
			if prop, ok := props[f.name]; ok {
				d.checkType(t, name+"."+f.name, prop, f.typ)
			}
			if f.omitempty && required[f.name] {
				t.Errorf("%s.%s is required but Go omits it when empty", name, f.name)
			}
		}
		for r := range required {
			if _, ok := props[r]; !ok {
				t.Errorf("%s: required %q is not a property", name, r)
			}
		}
		// An answer always carries the fields Go never omits.
		if !requestTypes[name] {
			if got, want := slices.Sorted(maps.Keys(required)), sortedSet(mustHave); !slices.Equal(got, want) {
				t.Errorf("%s: required %v, want the fields apiv1.%s never omits %v", name, got, rt.Name(), want)
			}
		}
	}
}

func TestOpenAPIEnumsAreTheAPIv1Constants(t *testing.T) {
	d := loadOpenAPI(t)
	states := []string{apiv1.StatePending, apiv1.StateRunning, apiv1.StateStopping, apiv1.StateStopped,
		apiv1.StateStarting, apiv1.StateRebooting, apiv1.StateResettingPassword, apiv1.StateError, apiv1.StateUnknown, apiv1.StateMissing}
	kinds := []string{apiv1.KindResetPassword, apiv1.KindStart, apiv1.KindStop, apiv1.KindReboot}
	opStatuses := []string{apiv1.OperationRunning, apiv1.OperationSucceeded, apiv1.OperationFailed, apiv1.OperationPartial}
	itemStates := []string{apiv1.ItemPending, apiv1.ItemRunning, apiv1.ItemSucceeded, apiv1.ItemFailed}
	steps := []string{apiv1.StepQueued, apiv1.StepShuttingDown, apiv1.StepForceStopping, apiv1.StepStopped,
		apiv1.StepStaging, apiv1.StepEditingDisk, apiv1.StepStarting, apiv1.StepWaitingGuest, apiv1.StepApplying, apiv1.StepDone}
	itemModes := []string{apiv1.ModeOnline, apiv1.ModeOffline}
	methods := []string{apiv1.MethodAuto, apiv1.MethodGuest, apiv1.MethodDisk}
	osTypes := []string{core.OSLinux, core.OSWindows}
	properties := []struct {
		schema, prop string
		want         []string
	}{
		{"Instance", "state", states},
		{"Instance", "osType", osTypes},
		{"InstanceCreate", "osType", osTypes},
		{"LatestOperation", "kind", kinds},
		{"LatestOperation", "state", []string{apiv1.OpStateOperating, apiv1.OpStateSuccess, apiv1.OpStateFailed}},
		{"PasswordReset", "mode", []string{apiv1.ModeAuto, apiv1.ModeOnline, apiv1.ModeOffline}},
		{"PasswordReset", "method", methods},
		{"Item", "method", methods},
		{"ItemEvent", "method", methods},
		{"PowerAction", "action", []string{apiv1.ActionStart, apiv1.ActionStop, apiv1.ActionReboot}},
		{"PowerAction", "stopMode", []string{apiv1.StopSoft, apiv1.StopHard, apiv1.StopSoftThenHard}},
		{"Operation", "kind", kinds},
		{"Operation", "status", opStatuses},
		{"Item", "state", itemStates},
		{"Item", "step", steps},
		{"Item", "mode", itemModes},
		{"ItemEvent", "state", itemStates},
		{"ItemEvent", "step", steps},
		{"ItemEvent", "mode", itemModes},
		{"Requester", "kind", []string{"key", "user"}},
		{"Event", "type", []string{events.TypeOperation, events.TypeItem, events.TypeInstance}},
	}
	for _, c := range properties {
		got := asStrings(d.deref(asMap(d.schema(c.schema)["properties"])[c.prop])["enum"])
		if !slices.Equal(sortedSet(got), sortedSet(c.want)) {
			t.Errorf("%s.%s: enum %v, want %v", c.schema, c.prop, got, c.want)
		}
	}
	params := []struct {
		method, path, name string
		want               []string
	}{
		{"GET", "/v1/instances", "state", states},
		{"GET", "/v1/instances", "os", osTypes},
		{"GET", "/v1/operations", "status", opStatuses},
	}
	for _, c := range params {
		o, _ := d.operation(c.method, c.path)
		var got []string
		for _, p := range d.params(o) {
			if p["in"] == "query" && p["name"] == c.name {
				got = asStrings(d.deref(p["schema"])["enum"])
			}
		}
		if !slices.Equal(sortedSet(got), sortedSet(c.want)) {
			t.Errorf("%s %s ?%s: enum %v, want %v", c.method, c.path, c.name, got, c.want)
		}
	}
}

// errorStatuses is the status of every code the API answers: statusOf,
// plus the wire-level codes writeErr and Register answer themselves.
// INVALID_JSON and UNKNOWN_FIELD are not in statusOf: writeErr's default
// (400) answers them.
func errorStatuses() map[int][]string {
	byCode := maps.Clone(statusOf)
	for code, status := range map[string]int{
		codeInvalidJSON: http.StatusBadRequest, codeUnknownField: http.StatusBadRequest,
		codeBodyTooLarge: http.StatusRequestEntityTooLarge,
		codeNotFound:     http.StatusNotFound, codeUnsupportedMediaType: http.StatusUnsupportedMediaType,
	} {
		if _, ok := byCode[code]; !ok {
			byCode[code] = status
		}
	}
	out := map[int][]string{}
	for code, status := range byCode {
		out[status] = append(out[status], code)
	}
	for status := range out {
		out[status] = sortedSet(out[status])
	}
	return out
}

// Each error answer's body is the ErrorBody, its code narrowed to exactly
// the codes the API answers with that status.
func TestOpenAPIErrorAnswersListTheCodesOfTheirStatus(t *testing.T) {
	d := loadOpenAPI(t)
	want := errorStatuses()
	seen := map[int]bool{}
	for _, o := range d.operations() {
		for code, r := range d.responses(o) {
			status, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s: response %q is not a status", o, code)
				continue
			}
			if status < 400 {
				continue
			}
			media := asMap(asMap(r["content"])["application/json"])
			if media == nil {
				if strings.HasPrefix(o.path, "/v1/") {
					t.Errorf("%s %d: an error answer of /v1 is application/json", o, status)
				}
				continue
			}
			seen[status] = true
			s := asMap(media["schema"])
			if !slices.ContainsFunc(asSlice(s["allOf"]), func(v any) bool {
				return asMap(v)["$ref"] == "#/components/schemas/ErrorBody"
			}) {
				t.Errorf("%s %d: the body is not an ErrorBody", o, status)
			}
			codes := asStrings(asMap(asMap(asMap(asMap(asMap(s["properties"])["error"])["properties"])["code"]))["enum"])
			if !slices.Equal(sortedSet(codes), want[status]) {
				t.Errorf("%s %d: codes %v, want %v", o, status, sortedSet(codes), want[status])
			}
			if status == http.StatusTooManyRequests {
				if _, ok := asMap(r["headers"])["Retry-After"]; !ok {
					t.Errorf("%s 429: no Retry-After header", o)
				}
			}
		}
	}
	for status, codes := range want {
		if !seen[status] {
			t.Errorf("no operation documents status %d (codes %v)", status, codes)
		}
	}
}

// wrap authenticates and rate-limits every route and may meet a store or
// internal failure; a route that reads a body may meet a bad one; one that
// takes an Idempotency-Key may meet a reused one.
func TestOpenAPIRoutesDocumentTheErrorsEveryRequestCanMeet(t *testing.T) {
	d := loadOpenAPI(t)
	for _, rt := range (&API{}).Routes() {
		o, ok := d.operation(rt.Method, openapiPath(rt.Pattern))
		if !ok {
			continue
		}
		need := []string{"401", "429", "500", "503"}
		if o.op["requestBody"] != nil {
			need = append(need, "400", "413", "415")
		}
		if slices.Contains(d.paramNames(o, "header"), "Idempotency-Key") {
			need = append(need, "422")
		}
		resps := d.responses(o)
		for _, code := range need {
			if resps[code] == nil {
				t.Errorf("%s: no %s answer", o, code)
			}
		}
	}
}

func TestOpenAPIEveryResponseCarriesXRequestID(t *testing.T) {
	d := loadOpenAPI(t)
	for _, o := range d.operations() {
		for code, r := range d.responses(o) {
			h := asMap(asMap(r["headers"])["X-Request-Id"])
			if h == nil {
				t.Errorf("%s %s: no X-Request-Id header", o, code)
				continue
			}
			if d.deref(h)["schema"] == nil {
				t.Errorf("%s %s: the X-Request-Id header has no schema", o, code)
			}
		}
	}
}

func TestOpenAPISecurityIsAnAPIKeyEverywhereButServiceEndpoints(t *testing.T) {
	d := loadOpenAPI(t)
	schemes := asMap(asMap(d.root["components"])["securitySchemes"])
	basic, bearer := asMap(schemes["basicAuth"]), asMap(schemes["bearerAuth"])
	if basic["type"] != "http" || basic["scheme"] != "basic" {
		t.Errorf("basicAuth = %v, want HTTP basic", basic)
	}
	if bearer["type"] != "http" || bearer["scheme"] != "bearer" || bearer["bearerFormat"] != "KEYID:SECRET" {
		t.Errorf("bearerAuth = %v, want HTTP bearer with format KEYID:SECRET", bearer)
	}
	var global []string
	for _, req := range asSlice(d.root["security"]) {
		global = append(global, slices.Collect(maps.Keys(asMap(req)))...)
	}
	if !slices.Equal(sortedSet(global), []string{"basicAuth", "bearerAuth"}) {
		t.Errorf("global security = %v, want basicAuth or bearerAuth", d.root["security"])
	}
	open := map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true, "GET /v1/openapi.json": true}
	for _, o := range d.operations() {
		sec, has := o.op["security"]
		switch {
		case open[o.String()] && (!has || len(asSlice(sec)) != 0):
			t.Errorf("%s needs no key: want security: []", o)
		case !open[o.String()] && has:
			t.Errorf("%s must keep the global security, not override it with %v", o, sec)
		}
	}
}

func TestOpenAPIEventsAreAServerSentEventStream(t *testing.T) {
	d := loadOpenAPI(t)
	o, ok := d.operation("GET", "/v1/events")
	if !ok {
		t.Fatal("GET /v1/events is not documented")
	}
	content := asMap(d.responses(o)["200"]["content"])
	if got := slices.Collect(maps.Keys(content)); !slices.Equal(got, []string{"text/event-stream"}) {
		t.Fatalf("GET /v1/events 200 content %v, want only text/event-stream", got)
	}
	if ref := asMap(asMap(content["text/event-stream"])["x-event-schema"])["$ref"]; ref != "#/components/schemas/Event" {
		t.Errorf("the event stream's data schema is %v, want the Event", ref)
	}
	ev := d.schema("Event")
	if n := len(asSlice(ev["oneOf"])); n != 3 {
		t.Errorf("Event has %d oneOf branches, want one per event type", n)
	}
	if !slices.Contains(d.paramNames(o, "header"), "Last-Event-ID") {
		t.Error("GET /v1/events documents no Last-Event-ID header")
	}
}

func TestOpenAPIIsServedWithoutAKeyAtV1OpenAPIJSON(t *testing.T) {
	mux := http.NewServeMux()
	(&API{}).Register(mux)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", "/v1/openapi.json", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json = %d, want 200", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if w.Body.String() != string(OpenAPI()) {
		t.Error("GET /v1/openapi.json does not serve OpenAPI()")
	}
}
