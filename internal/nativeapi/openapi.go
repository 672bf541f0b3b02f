package nativeapi

// OpenAPI returns the OpenAPI 3.1 document of the API.
func OpenAPI() []byte { return []byte(openapiDoc) }

const openapiDoc = `{"openapi":"3.1.0","info":{"title":"fleetpass","version":"1"},"paths":{}}`
