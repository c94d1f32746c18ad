//! Messages that more than one actor handles.

use actix::Message;

use crate::live::LiveHub;

/// Starts publishing this actor's changes on the live hub (`GET /api/v1/stream`).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct AttachLive(pub LiveHub);
