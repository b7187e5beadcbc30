use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdentitySubjects {
    Table,
    Id,
    Issuer,
    Subject,
    CreatedAt,
}

/// The user ids boxoffice keeps for identity providers' subjects (any
/// string `sub`: `auth0|…`, UUIDs): one row per (issuer, subject), its id
/// the user id, created the first time a token names the subject.
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdentitySubjects::Table)
                    .col(
                        ColumnDef::new(IdentitySubjects::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(IdentitySubjects::Issuer)
                            .string_len(1024)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdentitySubjects::Subject)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(IdentitySubjects::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_identity_subjects_issuer_subject")
                    .table(IdentitySubjects::Table)
                    .col(IdentitySubjects::Issuer)
                    .col(IdentitySubjects::Subject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(IdentitySubjects::Table).to_owned())
            .await
    }
}
