// What the GPU namespaceTotal rule hands the webhook so the pod's GPUs can be reserved
// where every replica sees them (policies/gpu_reservations.h). The engine stays pure: it
// counts the pods it was given and says what to reserve; the webhook does the writing.
#pragma once

#include <string>

#include "policies/policy.h"

namespace sizeguard {

// A Pod CREATE that a namespaceTotal rule passed on the pods alone (or, outside enforce
// mode, found over): its GPUs still have to fit beside other admitted pods not yet visible.
struct GpuCharge {
  std::string policy;
  Mode mode = Mode::Enforce;  // effective mode, settled like the rule's findings
  std::string namespace_;
  // Which visible pod will be this one. At admission a controller's pod has no name yet
  // (only metadata.generateName, see tests/fixtures/admission-apiserver-1.28/
  // pod-create-from-replicaset.json), so a reservation may name only its prefix.
  std::string pod;
  bool generated = false;     // `pod` is a generateName prefix
  double gpus = 0;            // this pod's GPUs
  double limit = 0;           // spec.gpu.namespaceTotal
  GpuRule rule;               // how pods are counted (they are listed again after reading the Lease)
  bool over_limit = false;    // the pods alone already exceed the limit (the engine reported it)
  bool deny_on_state_error = true;  // the policy's onClusterStateError (default deny)
};

}  // namespace sizeguard
