//! C-ECHO (PS3.7 9.1.5): the verification service.

use super::channel::Message;
use super::message::{command_field, response, status, CommandError};

/// The C-ECHO-RSP for a C-ECHO-RQ.
pub fn respond(request: &Message) -> Result<Vec<u8>, CommandError> {
    response(&request.command, command_field::C_ECHO_RSP, status::SUCCESS)
        .dataset(false)
        .encode()
}
