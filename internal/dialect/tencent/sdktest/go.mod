module github.com/fleetpass/fleetpass/internal/dialect/tencent/sdktest

go 1.26.8

require github.com/tencentcloud/tencentcloud-sdk-go v1.0.162
