package nativeapi

import (
	"bytes"
	_ "embed"
)

// openapiJSON is the hand-written document; openapi_test.go holds it
// against Routes(), the error mapping and the apiv1 types.
//
//go:embed openapi.json
var openapiJSON []byte

// OpenAPI returns the OpenAPI 3.1 document of the native API (the /v1
// routes, plus /healthz, /readyz and /metrics), as served at
// GET /v1/openapi.json. Each call returns a fresh copy.
func OpenAPI() []byte { return bytes.Clone(openapiJSON) }
