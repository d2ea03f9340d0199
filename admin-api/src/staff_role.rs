//! A staff role's name (as tokens and the API carry it) and rank (a change to a lower one is a
//! demotion, which revokes the person's tokens): shared by authentication and the rules for
//! people, which otherwise do not need each other.

use schemas::db::entities::agent::StaffRole;

/// The role as tokens and the API name it.
pub fn name(role: StaffRole) -> &'static str {
    match role {
        StaffRole::Agent => "agent",
        StaffRole::Supervisor => "supervisor",
        StaffRole::Admin => "admin",
    }
}

/// The rank of a role: a change to a lower one is a demotion, which revokes tokens.
pub fn rank(role: StaffRole) -> u8 {
    match role {
        StaffRole::Agent => 1,
        StaffRole::Supervisor => 2,
        StaffRole::Admin => 3,
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::ActiveEnum;

    use super::*;

    #[test]
    fn roles_rank_agent_supervisor_admin() {
        assert!(rank(StaffRole::Agent) < rank(StaffRole::Supervisor));
        assert!(rank(StaffRole::Supervisor) < rank(StaffRole::Admin));
    }

    #[test]
    fn a_role_is_named_as_the_database_stores_it() {
        for role in [StaffRole::Agent, StaffRole::Supervisor, StaffRole::Admin] {
            assert_eq!(name(role), role.to_value());
        }
    }
}
