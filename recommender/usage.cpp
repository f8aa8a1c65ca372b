#include "recommender/usage.h"
namespace sizeguard {
std::string WorkloadKey::to_string() const { return namespace_ + "/" + kind + "/" + name + "/" + container; }
}
