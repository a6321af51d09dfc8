// Session records: a SessionCheckpoint written down as JSON, as it is kept
// under DATA/uffd/VERSION/live/ and sent over handover.sock.
//
// A record is JSON on purpose: it is read back by a different process, maybe
// of a different version, so unknown fields are ignored and a missing one is
// an error naming it.
#pragma once

#include <nlohmann/json.hpp>

#include "pager/serving/session_checkpoint.h"
#include "uffdpager/status.h"

namespace uffdpager {

nlohmann::json SessionRecordJson(const SessionCheckpoint& checkpoint);
Result<SessionCheckpoint> ParseSessionRecord(const nlohmann::json& j);

}  // namespace uffdpager
