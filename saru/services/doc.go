// Package services is saru's room for the IPVS services it declares: it
// parses the services: section of saru.yaml (Parse), fingerprints the
// declaration so that directors that declare different services never
// share buckets (Fingerprint, Digests), turns the declaration and the
// fleet's health verdicts into the weight table every director applies
// (Decide, pure), and keeps the kernel in line with that table (Manager,
// through ipvs/reconcile).
//
// It must not probe real servers (package health) or carry votes
// (package verdict) itself, and it must never touch a service it did not
// declare: services set up by hand or by other tools stay as they are.
package services
