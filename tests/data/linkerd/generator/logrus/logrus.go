// Package logrus stands in for github.com/sirupsen/logrus when the generator builds
// linkerd2-proxy-init's pkg/iptables offline: the few calls that package makes, writing each
// Info line (the commands it would run) to stdout and everything else to stderr.
package logrus

import (
	"fmt"
	"os"
)

// Fields is logrus's structured-fields map.
type Fields map[string]interface{}

// Entry is a log line with fields.
type Entry struct{ fields Fields }

// WithFields returns an entry carrying f.
func WithFields(f Fields) *Entry { return &Entry{fields: f} }

func (e *Entry) Debug(args ...interface{}) { other("debug", fmt.Sprint(args...), e.fields) }
func (e *Entry) Warn(args ...interface{})  { other("warn", fmt.Sprint(args...), e.fields) }
func (e *Entry) Error(args ...interface{}) { other("error", fmt.Sprint(args...), e.fields) }

func other(level, msg string, f Fields) { fmt.Fprintf(os.Stderr, "%s: %s %v\n", level, msg, f) }

func Debug(args ...interface{})                 { other("debug", fmt.Sprint(args...), nil) }
func Debugf(format string, args ...interface{}) { other("debug", fmt.Sprintf(format, args...), nil) }
func Error(args ...interface{})                 { other("error", fmt.Sprint(args...), nil) }
func Errorf(format string, args ...interface{}) { other("error", fmt.Sprintf(format, args...), nil) }
func Warn(args ...interface{})                  { other("warn", fmt.Sprint(args...), nil) }

// Info prints the line on stdout: pkg/iptables logs each command it runs this way.
func Info(args ...interface{}) { fmt.Println(fmt.Sprint(args...)) }

// Infof prints command output (none when simulating).
func Infof(format string, args ...interface{}) { other("info", fmt.Sprintf(format, args...), nil) }
