package password

import "testing"

// The rule of Tencent Cloud's ResetInstancesPassword, as its API
// documentation states it.
func TestTencentRule(t *testing.T) {
	first := []string{RuleFirstChar}
	runCheckCases(t, []checkCase{
		{"linux: 8 characters of 3 kinds", TencentLinux(), "Tc3+Rst9", "root", nil},
		{"linux: 7 characters", TencentLinux(), "Tc3+Rs9", "root", length},
		{"linux: 30 characters", TencentLinux(), "Aa1" + repeat("x", 27), "root", nil},
		{"linux: 31 characters", TencentLinux(), "Aa1" + repeat("x", 28), "root", length},
		{"linux: the listed special characters", TencentLinux(), "Aa1()`~!@#$%^&*-+=_|{}[]", "root", nil},
		{"linux: the other listed special characters", TencentLinux(), "Aa1:;'<>,.?/", "root", nil},
		{"linux: a slash inside", TencentLinux(), "Aa1/rest9", "root", nil},
		{"linux: starting with a slash", TencentLinux(), "/Aa1rest9", "root", first},
		{"linux: two kinds", TencentLinux(), "abcdefg1", "root", classes},
		{"linux: a space", TencentLinux(), "Aa1 rest9", "root", charset},
		{"linux: a double quote (not listed)", TencentLinux(), "Aa1\"rest9", "root", charset},
		{"linux: may contain the user name", TencentLinux(), "Root+pass9", "root", nil},
		{"windows: 12 characters", TencentWindows(), "Tc3+Reset9Ok", "Administrator", nil},
		{"windows: 11 characters", TencentWindows(), "Tc3+Reset9O", "Administrator", length},
		{"windows: the user name", TencentWindows(), "xAdministrator1+", "Administrator", brokeUser},
		{"windows: starting with a slash", TencentWindows(), "/Tc3+Reset9Ok", "Administrator", first},
		{"a mixed batch takes both rules", Tencent(OSLinux, OSWindows), "Tc3+Rst9", "root", length},
	})
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}
