CREATE CONSTRAINT story_id IF NOT EXISTS FOR (n:Story) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT character_key IF NOT EXISTS FOR (n:Character) REQUIRE (n.story_id, n.id) IS UNIQUE;
CREATE CONSTRAINT environment_key IF NOT EXISTS FOR (n:Environment) REQUIRE (n.story_id, n.id) IS UNIQUE;
CREATE CONSTRAINT scene_key IF NOT EXISTS FOR (n:Scene) REQUIRE (n.story_id, n.id) IS UNIQUE;
CREATE CONSTRAINT take_key IF NOT EXISTS FOR (n:Take) REQUIRE (n.story_id, n.id) IS UNIQUE;
CREATE CONSTRAINT appearance_key IF NOT EXISTS FOR (n:Appearance) REQUIRE (n.story_id, n.id) IS UNIQUE;
CREATE CONSTRAINT reference_key IF NOT EXISTS FOR (n:Reference) REQUIRE (n.story_id, n.id) IS UNIQUE;
CREATE CONSTRAINT event_key IF NOT EXISTS FOR (n:Event) REQUIRE (n.story_id, n.seq) IS UNIQUE;
CREATE CONSTRAINT counter_name IF NOT EXISTS FOR (n:Counter) REQUIRE n.name IS UNIQUE;
CREATE INDEX appearance_character IF NOT EXISTS FOR (n:Appearance) ON (n.story_id, n.character_id);
CREATE INDEX scene_status IF NOT EXISTS FOR (n:Scene) ON (n.story_id, n.status)
